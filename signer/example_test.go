package signer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"strings"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
)

func ExampleSigner_Sign() {
	const actor = "https://local.example/users/alice"
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	keys := &signer.StaticKeys{}
	if err := keys.Add(actor, actor+"#main-key", key); err != nil {
		panic(err)
	}
	s, err := signer.New(keys, nil)
	if err != nil {
		panic(err)
	}

	a := &sender.Activity{Actor: actor, Body: []byte(`{"id":"https://local.example/activities/1"}`)}
	r, err := http.NewRequest(http.MethodPost, "https://remote.example:8443/inbox", bytes.NewReader(a.Body))
	if err != nil {
		panic(err)
	}
	if err := s.Sign(context.Background(), r, a.Actor, a.Digest()); err != nil {
		panic(err)
	}
	fmt.Println("Host:", r.Host)
	fmt.Println("Digest:", r.Header.Get("Digest"))
	for _, p := range strings.Split(r.Header.Get("Signature"), ",") {
		if !strings.HasPrefix(p, "signature=") {
			fmt.Println(p)
		}
	}
	// Output:
	// Host: remote.example:8443
	// Digest: SHA-256=fvL2aAP327KtgKRyyy+1wcTq8yV3KAxZEI0eokPUOmI=
	// keyId="https://local.example/users/alice#main-key"
	// algorithm="rsa-sha256"
	// headers="(request-target) host date digest"
}

package signer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"strings"
	"time"

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

func ExampleSigner_SignWith() {
	const actor = "https://local.example/users/alice"
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	keys := &signer.StaticKeys{}
	if err := keys.Add(actor, actor+"#main-key", key); err != nil {
		panic(err)
	}
	created := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	s, err := signer.New(keys, &signer.Config{NowFunc: func() time.Time { return created }})
	if err != nil {
		panic(err)
	}
	a := &sender.Activity{Actor: actor, Body: []byte(`{"id":"https://local.example/activities/1"}`)}
	r, err := http.NewRequest(http.MethodPost, "https://remote.example/users/bob/inbox", bytes.NewReader(a.Body))
	if err != nil {
		panic(err)
	}
	err = s.SignWith(context.Background(), r, a.Actor, &signer.Options{Scheme: signer.RFC9421, ContentDigest: a.ContentDigest()})
	if err != nil {
		panic(err)
	}
	fmt.Println("Content-Digest:", r.Header.Get("Content-Digest"))
	fmt.Println("Signature-Input:", r.Header.Get("Signature-Input"))
	fmt.Println(strings.HasPrefix(r.Header.Get("Signature"), "sig1=:"))
	// Output:
	// Content-Digest: sha-256=:fvL2aAP327KtgKRyyy+1wcTq8yV3KAxZEI0eokPUOmI=:
	// Signature-Input: sig1=("@method" "@target-uri" "content-digest");created=1796040000;keyid="https://local.example/users/alice#main-key";alg="rsa-v1_5-sha256"
	// true
}

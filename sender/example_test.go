package sender_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
)

// A signed delivery to a local test inbox that verifies the signature.
func ExampleNewHTTP() {
	const actor = "https://local.example/users/alice"
	const keyID = actor + "#main-key"
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	keys := &signer.StaticKeys{}
	if err := keys.Add(actor, keyID, key); err != nil {
		panic(err)
	}
	sig, err := signer.New(keys, nil)
	if err != nil {
		panic(err)
	}

	inbox := inboxtest.New(&inboxtest.Config{Keys: map[string]*rsa.PublicKey{keyID: &key.PublicKey}})
	defer inbox.Close()

	h, err := sender.NewHTTP(&sender.HTTPConfig{
		Signer:        sig,
		UserAgent:     "example/1.0 (+https://local.example)",
		AllowLoopback: true, // the test inbox listens on loopback
		AllowHTTP:     true, // with plain http
	})
	if err != nil {
		panic(err)
	}
	defer h.Close()

	res := h.Send(context.Background(), &sender.Delivery{
		Activity: &sender.Activity{ID: 1, Actor: actor, Body: []byte(`{"id":"https://local.example/activities/1","type":"Create"}`)},
		Inbox:    inbox.SharedInbox(),
		Attempt:  1,
	})
	fmt.Println(res.Outcome, res.Status)
	// Output: delivered 202
}

func ExampleCheckAddr() {
	for _, s := range []string{"93.184.215.14", "169.254.169.254", "::ffff:10.0.0.1"} {
		err := sender.CheckAddr(netip.MustParseAddr(s), nil)
		var blocked *sender.BlockedAddressError
		if errors.As(err, &blocked) {
			fmt.Println(s, "blocked:", blocked.Range)
		} else {
			fmt.Println(s, "allowed")
		}
	}
	// Output:
	// 93.184.215.14 allowed
	// 169.254.169.254 blocked: link-local
	// ::ffff:10.0.0.1 blocked: IPv4-mapped private
}

func ExampleParseRetryAfter() {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for _, v := range []string{"120", "Mon, 23 Nov 2026 10:05:00 GMT", "soon"} {
		d, ok := sender.ParseRetryAfter(v, now)
		fmt.Println(d, ok)
	}
	// Output:
	// 2m0s true
	// 5m0s true
	// 0s false
}

package signer

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"net/http"
	"net/url"
	"testing"
)

// BenchmarkRSASign is the floor for any signature: one raw
// rsa.SignPKCS1v15 with a 2048-bit key.
func BenchmarkRSASign(b *testing.B) {
	k := testKey()
	sum := sha256.Sum256([]byte("(request-target): post /inbox\nhost: remote.example"))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSign compares pooling httpsig signers with building one per call.
func BenchmarkSign(b *testing.B) {
	u, _ := url.Parse("https://remote.example/users/bob/inbox")
	body := []byte(`{"id":"https://local.example/activities/1"}`)
	digest := digestOf(body)
	for _, bc := range []struct {
		name   string
		noPool bool
	}{{"pool", false}, {"per-call", true}} {
		b.Run(bc.name, func(b *testing.B) {
			s := newTestSigner(b, nil)
			s.noPool = bc.noPool
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := &http.Request{Method: http.MethodPost, URL: u, Header: make(http.Header, 4)}
					if err := s.Sign(context.Background(), r, actor, digest); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkSignScheme compares a whole signature of each scheme, RSA-2048,
// with BenchmarkRSASign, the floor.
func BenchmarkSignScheme(b *testing.B) {
	u, _ := url.Parse("https://remote.example/users/bob/inbox")
	body := []byte(`{"id":"https://local.example/activities/1"}`)
	for _, sc := range []Scheme{Cavage, RFC9421} {
		b.Run(string(sc), func(b *testing.B) {
			s := newTestSigner(b, nil)
			o := &Options{Scheme: sc, Digest: digestOf(body), ContentDigest: contentDigestOf(body)}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := &http.Request{Method: http.MethodPost, URL: u, Header: make(http.Header, 4)}
					if err := s.SignWith(context.Background(), r, actor, o); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

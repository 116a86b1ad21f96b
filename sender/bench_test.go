package sender

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkSignedDelivery measures whole signed deliveries (sign, POST over a
// reused loopback connection, read and classify the answer) from parallel
// goroutines. Compare deliveries/s with BenchmarkRSASign's signs/s: signing
// is the floor.
//
//	go test -run '^$' -bench 'SignedDelivery|RSASign' -benchmem ./sender
func BenchmarkSignedDelivery(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	for _, bc := range []struct {
		name   string
		signed bool
	}{{"signed", true}, {"unsigned", false}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := &HTTPConfig{AllowLoopback: true, AllowHTTP: true}
			if bc.signed {
				cfg.Signer = newTestSigner(b)
			}
			h, err := NewHTTP(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			a := &Activity{ID: 1, Actor: testActor, Body: []byte(`{"@context":"https://www.w3.org/ns/activitystreams","id":"https://local.example/activities/1","type":"Create","actor":"https://local.example/users/alice","object":{"id":"https://local.example/notes/1","type":"Note","content":"hello"}}`)}
			inbox := srv.URL + "/inbox"
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res := h.Send(context.Background(), &Delivery{Activity: a, Inbox: inbox, Attempt: 1})
					if res.Outcome != Delivered {
						b.Errorf("delivery failed: %s", res.Reason)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
		})
	}
}

// BenchmarkRSASign is the raw rate of rsa.SignPKCS1v15 with a 2048-bit key
// on this machine, from parallel goroutines.
func BenchmarkRSASign(b *testing.B) {
	k := testKey()
	sum := sha256.Sum256([]byte("(request-target): post /inbox"))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "signs/s")
}

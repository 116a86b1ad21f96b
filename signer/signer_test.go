package signer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/httpsigverify"
)

const (
	actor = "https://local.example/users/alice"
	keyID = actor + "#main-key"
)

var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func digestOf(body []byte) string {
	sum := sha256.Sum256(body)
	return "SHA-256=" + base64.StdEncoding.EncodeToString(sum[:])
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestSigner(t testing.TB, cfg *Config) *Signer {
	t.Helper()
	keys := &StaticKeys{}
	require.NoError(t, keys.Add(actor, keyID, testKey()))
	s, err := New(keys, cfg)
	require.NoError(t, err)
	return s
}

func newRequest(t testing.TB, url string, body []byte) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	require.NoError(t, err)
	return r
}

func keyFunc(id string) (*rsa.PublicKey, error) {
	if id != keyID {
		return nil, fmt.Errorf("unknown key %s", id)
	}
	return &testKey().PublicKey, nil
}

func verify(r *http.Request, body []byte) error {
	_, err := httpsigverify.Verify(r, body, keyFunc, nil)
	return err
}

func TestSignProducesVerifiableCavageSignature(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	s := newTestSigner(t, &Config{NowFunc: clock.Now})
	body := []byte(`{"id":"https://local.example/activities/1","type":"Create"}`)

	tests := []struct {
		url, host, target string
	}{
		{"https://remote.example/inbox", "remote.example", "/inbox"},
		{"https://Remote.Example:443/inbox", "remote.example", "/inbox"},
		{"https://remote.example:8443/users/bob/inbox", "remote.example:8443", "/users/bob/inbox"},
		{"http://remote.example:80/inbox?a=b", "remote.example", "/inbox?a=b"},
		{"https://bücher.example/inbox", "xn--bcher-kva.example", "/inbox"},
		{"https://remote.example/users/a%2Fb/inbox", "remote.example", "/users/a%2Fb/inbox"},
		{"https://[2001:db8::1]:8443/inbox", "[2001:db8::1]:8443", "/inbox"},
		{"https://remote.example", "remote.example", "/"}, // Go sends "/" for an empty path
		{"https://remote.example?x=1", "remote.example", "/?x=1"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			r := newRequest(t, tt.url, body)
			require.NoError(t, s.Sign(context.Background(), r, actor, digestOf(body)))
			require.Equal(t, tt.host, r.Host)
			require.Equal(t, "Mon, 23 Nov 2026 10:00:00 GMT", r.Header.Get("Date"))
			require.Equal(t, digestOf(body), r.Header.Get("Digest"))
			require.Empty(t, r.Header.Values("Host"), "Host travels in r.Host")
			sig := r.Header.Values("Signature")
			require.Len(t, sig, 1)
			require.Contains(t, sig[0], `keyId="`+keyID+`"`)
			require.Contains(t, sig[0], `algorithm="rsa-sha256"`)
			require.NotContains(t, sig[0], "hs2019")
			require.Contains(t, sig[0], `headers="(request-target) host date digest"`)

			p, err := httpsigverify.Verify(r, body, keyFunc, nil)
			require.NoError(t, err)
			require.Equal(t, []string{"(request-target)", "host", "date", "digest"}, p.Headers)
			s, err := httpsigverify.SigningString(r, p.Headers)
			require.NoError(t, err)
			require.Equal(t, "(request-target): post "+tt.target+"\nhost: "+tt.host+
				"\ndate: Mon, 23 Nov 2026 10:00:00 GMT\ndigest: "+digestOf(body), s)
		})
	}
}

func TestTamperingBreaksVerification(t *testing.T) {
	t.Parallel()
	s := newTestSigner(t, nil)
	body := []byte(`{"id":"https://local.example/activities/2"}`)
	sign := func(t *testing.T) *http.Request {
		r := newRequest(t, "https://remote.example/inbox", body)
		require.NoError(t, s.Sign(context.Background(), r, actor, digestOf(body)))
		require.NoError(t, verify(r, body))
		return r
	}
	tests := map[string]func(r *http.Request) []byte{
		"body": func(r *http.Request) []byte { return []byte(`{"id":"https://local.example/activities/3"}`) },
		"body and digest": func(r *http.Request) []byte {
			b := []byte(`{"id":"evil"}`)
			r.Header.Set("Digest", digestOf(b))
			return b
		},
		"host": func(r *http.Request) []byte { r.Host = "other.example"; return body },
		"date": func(r *http.Request) []byte {
			r.Header.Set("Date", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
			return body
		},
		"path":   func(r *http.Request) []byte { r.URL.Path = "/users/bob/inbox"; return body },
		"method": func(r *http.Request) []byte { r.Method = http.MethodPut; return body },
		"digest": func(r *http.Request) []byte {
			r.Header.Set("Digest", digestOf([]byte("x")))
			return body
		},
		"signature": func(r *http.Request) []byte {
			v := r.Header.Get("Signature")
			i := strings.Index(v, `signature="`) + len(`signature="`)
			c := byte('A')
			if v[i] == 'A' {
				c = 'B'
			}
			r.Header.Set("Signature", v[:i]+string(c)+v[i+1:])
			return body
		},
	}
	for name, tamper := range tests {
		t.Run(name, func(t *testing.T) {
			r := sign(t)
			b := tamper(r)
			err := verify(r, b)
			require.ErrorIs(t, err, httpsigverify.ErrInvalid)
		})
	}
}

func TestRetryGetsFreshDateAndSignature(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	s := newTestSigner(t, &Config{NowFunc: clock.Now})
	body := []byte(`{"id":"https://local.example/activities/4"}`)

	r1 := newRequest(t, "https://remote.example/inbox", body)
	require.NoError(t, s.Sign(context.Background(), r1, actor, digestOf(body)))
	clock.Advance(30 * time.Second)
	r2 := newRequest(t, "https://remote.example/inbox", body)
	require.NoError(t, s.Sign(context.Background(), r2, actor, digestOf(body)))

	require.NotEqual(t, r1.Header.Get("Date"), r2.Header.Get("Date"))
	require.NotEqual(t, r1.Header.Get("Signature"), r2.Header.Get("Signature"))
	require.NoError(t, verify(r1, body))
	require.NoError(t, verify(r2, body))

	// Re-signing the same request replaces the headers instead of adding.
	clock.Advance(time.Minute)
	require.NoError(t, s.Sign(context.Background(), r2, actor, digestOf(body)))
	require.Len(t, r2.Header.Values("Signature"), 1)
	require.Len(t, r2.Header.Values("Date"), 1)
	require.Equal(t, "Mon, 23 Nov 2026 10:01:30 GMT", r2.Header.Get("Date"))
	require.NoError(t, verify(r2, body))
}

func TestConcurrentSigning(t *testing.T) {
	t.Parallel()
	s := newTestSigner(t, nil)
	const goroutines, each = 32, 4
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				body := []byte(fmt.Sprintf(`{"id":"https://local.example/activities/%d-%d"}`, g, i))
				r, err := http.NewRequest(http.MethodPost, fmt.Sprintf("https://host%d.example/inbox/%d", g, i), bytes.NewReader(body))
				if err != nil {
					errs <- err
					continue
				}
				if err := s.Sign(context.Background(), r, actor, digestOf(body)); err != nil {
					errs <- err
					continue
				}
				errs <- verify(r, body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestWeakKeysAreRefused(t *testing.T) {
	t.Parallel()
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)

	err = (&StaticKeys{}).Add(actor, keyID, weak)
	require.ErrorIs(t, err, ErrWeakKey)
	require.Contains(t, err.Error(), "1024 bits")

	der := x509.MarshalPKCS1PrivateKey(weak)
	_, err = ParsePrivateKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}))
	require.ErrorIs(t, err, ErrWeakKey)

	// A KeySource that hands out a weak key is caught at signing.
	s, err := New(KeySourceFunc(func(context.Context, string) (Key, error) {
		return Key{ID: keyID, Private: weak}, nil
	}), nil)
	require.NoError(t, err)
	err = s.Sign(context.Background(), newRequest(t, "https://remote.example/inbox", nil), actor, digestOf(nil))
	require.ErrorIs(t, err, ErrWeakKey)
}

func TestUnknownActor(t *testing.T) {
	t.Parallel()
	s := newTestSigner(t, nil)
	err := s.Sign(context.Background(), newRequest(t, "https://remote.example/inbox", nil), "https://local.example/users/nobody", digestOf(nil))
	require.ErrorIs(t, err, ErrUnknownActor)
}

func pemEncode(t *testing.T, typ string) []byte {
	t.Helper()
	var der []byte
	switch typ {
	case "RSA PRIVATE KEY":
		der = x509.MarshalPKCS1PrivateKey(testKey())
	case "PRIVATE KEY":
		var err error
		der, err = x509.MarshalPKCS8PrivateKey(testKey())
		require.NoError(t, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestParsePrivateKeyPEM(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{"RSA PRIVATE KEY", "PRIVATE KEY"} {
		k, err := ParsePrivateKeyPEM(pemEncode(t, typ))
		require.NoError(t, err, typ)
		require.True(t, k.Equal(testKey()), typ)
	}
	_, err := ParsePrivateKeyPEM([]byte("not pem"))
	require.Error(t, err)
}

func TestPEMKeysCachesParsedKeys(t *testing.T) {
	t.Parallel()
	var lookups atomic.Int32
	data := pemEncode(t, "RSA PRIVATE KEY")
	p := NewPEMKeys(func(_ context.Context, a string) (string, []byte, error) {
		lookups.Add(1)
		if a != actor {
			return "", nil, ErrUnknownActor
		}
		return keyID, data, nil
	}, time.Minute)
	clock := &fakeClock{t: time.Now()}
	p.now = clock.Now

	for range 3 {
		k, err := p.Key(context.Background(), actor)
		require.NoError(t, err)
		require.Equal(t, keyID, k.ID)
		require.True(t, k.Private.Equal(testKey()))
	}
	require.EqualValues(t, 1, lookups.Load())

	p.Forget(actor)
	_, err := p.Key(context.Background(), actor)
	require.NoError(t, err)
	require.EqualValues(t, 2, lookups.Load())

	clock.Advance(2 * time.Minute)
	_, err = p.Key(context.Background(), actor)
	require.NoError(t, err)
	require.EqualValues(t, 3, lookups.Load())

	_, err = p.Key(context.Background(), "https://local.example/users/nobody")
	require.True(t, errors.Is(err, ErrUnknownActor))
}

func TestSignRejectsEmptyDigest(t *testing.T) {
	t.Parallel()
	s := newTestSigner(t, nil)
	require.Error(t, s.Sign(context.Background(), newRequest(t, "https://remote.example/inbox", nil), actor, ""))
}

package httpsigverify

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var key = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func keyFunc(id string) (*rsa.PublicKey, error) {
	if id != "k1" {
		return nil, errors.New("unknown key")
	}
	return &key().PublicKey, nil
}

func digest(body []byte) string {
	sum := sha256.Sum256(body)
	return "SHA-256=" + base64.StdEncoding.EncodeToString(sum[:])
}

// signedRequest builds a server-side request signed by hand, following the
// specification, so the verifier is tested apart from any signer.
func signedRequest(t *testing.T, headers string, algorithm string) (*http.Request, []byte) {
	t.Helper()
	body := []byte(`{"id":"x"}`)
	r := httptest.NewRequest(http.MethodPost, "https://remote.example:8443/inbox?a=1", bytes.NewReader(body))
	r.Header.Set("Date", "Mon, 23 Nov 2026 10:00:00 GMT")
	r.Header.Set("Digest", digest(body))
	s, err := SigningString(r, strings.Fields(headers))
	require.NoError(t, err)
	sum := sha256.Sum256([]byte(s))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key(), crypto.SHA256, sum[:])
	require.NoError(t, err)
	r.Header.Set("Signature", `keyId="k1",algorithm="`+algorithm+`",headers="`+headers+`",signature="`+base64.StdEncoding.EncodeToString(sig)+`"`)
	return r, body
}

func TestVerify(t *testing.T) {
	t.Parallel()
	r, body := signedRequest(t, "(request-target) host date digest", "rsa-sha256")
	s, err := SigningString(r, DefaultRequired)
	require.NoError(t, err)
	require.Equal(t, "(request-target): post /inbox?a=1\nhost: remote.example:8443\ndate: Mon, 23 Nov 2026 10:00:00 GMT\ndigest: "+digest(body), s)

	p, err := Verify(r, body, keyFunc, nil)
	require.NoError(t, err)
	require.Equal(t, "k1", p.KeyID)
	require.Equal(t, "rsa-sha256", p.Algorithm)

	r, body = signedRequest(t, "(request-target) host date digest", "hs2019")
	_, err = Verify(r, body, keyFunc, nil)
	require.NoError(t, err)
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		headers, algorithm string
		mutate             func(r *http.Request, body []byte) []byte
		opts               *Options
	}{
		"missing digest coverage": {headers: "(request-target) host date", algorithm: "rsa-sha256"},
		"unsupported algorithm":   {headers: "(request-target) host date digest", algorithm: "ed25519"},
		"no signature": {headers: "(request-target) host date digest", algorithm: "rsa-sha256", mutate: func(r *http.Request, b []byte) []byte {
			r.Header.Del("Signature")
			return b
		}},
		"two signatures": {headers: "(request-target) host date digest", algorithm: "rsa-sha256", mutate: func(r *http.Request, b []byte) []byte {
			r.Header.Add("Signature", r.Header.Get("Signature"))
			return b
		}},
		"body": {headers: "(request-target) host date digest", algorithm: "rsa-sha256", mutate: func(r *http.Request, b []byte) []byte {
			return []byte(`{"id":"y"}`)
		}},
		"query": {headers: "(request-target) host date digest", algorithm: "rsa-sha256", mutate: func(r *http.Request, b []byte) []byte {
			r.RequestURI = "/inbox?a=2"
			return b
		}},
		"stale date": {headers: "(request-target) host date digest", algorithm: "rsa-sha256", opts: &Options{Now: now.Add(2 * time.Hour), MaxSkew: time.Hour}},
		"unknown key": {headers: "(request-target) host date digest", algorithm: "rsa-sha256", mutate: func(r *http.Request, b []byte) []byte {
			r.Header.Set("Signature", strings.Replace(r.Header.Get("Signature"), `keyId="k1"`, `keyId="k2"`, 1))
			return b
		}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			r, body := signedRequest(t, tt.headers, tt.algorithm)
			if tt.mutate != nil {
				body = tt.mutate(r, body)
			}
			_, err := Verify(r, body, keyFunc, tt.opts)
			require.ErrorIs(t, err, ErrInvalid)
		})
	}
	r, body := signedRequest(t, "(request-target) host date digest", "rsa-sha256")
	_, err := Verify(r, body, keyFunc, &Options{Now: now.Add(30 * time.Minute), MaxSkew: time.Hour})
	require.NoError(t, err)
}

func TestParseSignature(t *testing.T) {
	t.Parallel()
	p, err := ParseSignature(`keyId="https://a.example/u#k", algorithm="rsa-sha256",headers="(request-target) Host date",signature="AAEC"`)
	require.NoError(t, err)
	require.Equal(t, &Params{KeyID: "https://a.example/u#k", Algorithm: "rsa-sha256", Headers: []string{"(request-target)", "host", "date"}, Signature: []byte{0, 1, 2}}, p)

	p, err = ParseSignature(`keyId="k",signature="AAEC"`)
	require.NoError(t, err)
	require.Equal(t, []string{"date"}, p.Headers, "the specification's default")

	for _, bad := range []string{"", `keyId="k"`, `signature="AAEC"`, `keyId="k",signature="!!"`, `keyId="k,signature="AAEC"`, `keyId="k" signature="AAEC"`, `keyId="a",keyId="b",signature="AAEC"`, `=x`} {
		_, err := ParseSignature(bad)
		require.ErrorIs(t, err, ErrInvalid, bad)
	}
}

func TestVerifyDigest(t *testing.T) {
	t.Parallel()
	body := []byte("hello")
	require.NoError(t, VerifyDigest(digest(body), body))
	require.NoError(t, VerifyDigest("SHA-512=xyz, "+digest(body), body))
	require.ErrorIs(t, VerifyDigest(digest(body), []byte("hellO")), ErrInvalid)
	require.ErrorIs(t, VerifyDigest("SHA-512=xyz", body), ErrInvalid)
	require.ErrorIs(t, VerifyDigest("", body), ErrInvalid)
}

func FuzzParseSignature(f *testing.F) {
	f.Add(`keyId="k",algorithm="rsa-sha256",headers="(request-target) host date digest",signature="AAEC"`)
	f.Add(`keyId=k,signature=AAEC`)
	f.Add(`keyId="k",,signature="AAEC"`)
	f.Fuzz(func(t *testing.T, v string) {
		p, err := ParseSignature(v)
		if err == nil && (p.KeyID == "" || len(p.Signature) == 0 && !strings.Contains(v, "signature")) {
			t.Fatalf("accepted %q without keyId or signature: %+v", v, p)
		}
	})
}

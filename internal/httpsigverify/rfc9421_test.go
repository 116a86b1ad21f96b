package httpsigverify

import (
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// rfcEd25519Public is the public key of RFC 9421 Appendix B.1.4.
var rfcEd25519Public = func() ed25519.PublicKey {
	der, err := base64.StdEncoding.DecodeString("MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=")
	if err != nil {
		panic(err)
	}
	return ed25519.PublicKey(der[len(der)-ed25519.PublicKeySize:])
}()

// rfcB26 is the request of RFC 9421 Appendix B.2.6 as a server receives
// it, signed with test-key-ed25519.
func rfcB26() *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/foo?param=Value&Pet=dog", strings.NewReader(`{"hello": "world"}`))
	r.Host = "example.com"
	r.Header.Set("Date", "Tue, 20 Apr 2021 02:07:55 GMT")
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Content-Length", "18")
	r.Header.Set("Signature-Input", `sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"`)
	r.Header.Set("Signature", `sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:`)
	return r
}

func rfcKeys(id string) (crypto.PublicKey, error) {
	if id != "test-key-ed25519" {
		return nil, errors.New("unknown key")
	}
	return rfcEd25519Public, nil
}

func TestVerifyRFC9421AppendixB26(t *testing.T) {
	t.Parallel()
	body := []byte(`{"hello": "world"}`)
	opts := &Options9421{Required: []string{"@method", "@authority", "@path"}}
	p, err := VerifyRFC9421(rfcB26(), body, rfcKeys, opts)
	require.NoError(t, err)
	require.Equal(t, "sig-b26", p.Label)
	require.Equal(t, "test-key-ed25519", p.KeyID)
	require.Equal(t, int64(1618884473), p.Created)

	tests := map[string]func(r *http.Request) *Options9421{
		"method":    func(r *http.Request) *Options9421 { r.Method = http.MethodPut; return opts },
		"authority": func(r *http.Request) *Options9421 { r.Host = "example.org"; return opts },
		"path":      func(r *http.Request) *Options9421 { r.RequestURI = "/bar"; return opts },
		"header":    func(r *http.Request) *Options9421 { r.Header.Set("Content-Type", "text/plain"); return opts },
		"required":  func(*http.Request) *Options9421 { return nil }, // Mastodon's set is not covered
		"two labels": func(r *http.Request) *Options9421 {
			r.Header.Set("Signature-Input", r.Header.Get("Signature-Input")+`, b=("@method");created=1;keyid="x"`)
			return opts
		},
		"stale": func(*http.Request) *Options9421 {
			return &Options9421{Required: opts.Required, Now: time.Unix(1618884473, 0).Add(2 * time.Hour), MaxSkew: time.Hour}
		},
		"unknown key": func(r *http.Request) *Options9421 {
			r.Header.Set("Signature-Input", strings.Replace(r.Header.Get("Signature-Input"), "test-key-ed25519", "other", 1))
			return opts
		},
	}
	for name, tamper := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := rfcB26()
			o := tamper(r)
			_, err := VerifyRFC9421(r, body, rfcKeys, o)
			require.ErrorIs(t, err, ErrInvalid)
		})
	}
}

func TestVerifyContentDigest(t *testing.T) {
	t.Parallel()
	body := []byte(`{"hello": "world"}`)
	// RFC 9530 §2's example: the sha-256 of {"hello": "world"}.
	require.NoError(t, VerifyContentDigest("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", body))
	require.NoError(t, VerifyContentDigest("sha-512=:abc=:, sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", body))
	require.ErrorIs(t, VerifyContentDigest("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", []byte("x")), ErrInvalid)
	require.ErrorIs(t, VerifyContentDigest("sha-512=:abc=:", body), ErrInvalid)
	require.ErrorIs(t, VerifyContentDigest("", body), ErrInvalid)
}

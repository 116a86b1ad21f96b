package signer

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The RFC 9421 examples reproduced exactly, with the keys of Appendix B.1
// (testdata). RSASSA-PKCS1-v1_5 and Ed25519 are deterministic, so signing
// the RFC's signature base with its key must give the RFC's signature byte
// for byte.

func rfcKey(t *testing.T, file, id string) Key {
	t.Helper()
	data, err := os.ReadFile("testdata/" + file)
	require.NoError(t, err)
	k, err := ParseKeyPEM(data)
	require.NoError(t, err)
	k.ID = id
	return k
}

// rfcRequest is the request of RFC 9421 Appendix B.2, to host.
func rfcRequest(t *testing.T, host string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, "https://"+host+"/foo?param=Value&Pet=dog", strings.NewReader(`{"hello": "world"}`))
	require.NoError(t, err)
	r.Header.Set("Date", "Tue, 20 Apr 2021 02:07:55 GMT")
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Content-Digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:")
	r.Header.Set("Content-Length", "18")
	return r
}

// checkVector parses input, checks the signature base of r against base,
// signs r with key and checks the headers against input and signature.
func checkVector(t *testing.T, r *http.Request, key Key, input, base, signature string) {
	t.Helper()
	specs, err := ParseSignatureInput(input)
	require.NoError(t, err)
	require.Len(t, specs, 1)
	require.Equal(t, input, specs[0].String(), "the parsed Signature-Input serialises back as written")
	got, err := SignatureBase(r, &specs[0])
	require.NoError(t, err)
	require.Equal(t, base, string(got))
	require.NoError(t, SignSpec(r, key, &specs[0]))
	require.Equal(t, input, r.Header.Get("Signature-Input"))
	require.Equal(t, signature, r.Header.Get("Signature"))
}

func TestRFC9421AppendixB26Ed25519(t *testing.T) {
	t.Parallel()
	const input = `sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"`
	const signature = `sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:`
	const base = `"date": Tue, 20 Apr 2021 02:07:55 GMT
"@method": POST
"@path": /foo
"@authority": example.com
"content-type": application/json
"content-length": 18
"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"`

	key := rfcKey(t, "rfc9421-test-key-ed25519.pem", "test-key-ed25519")
	require.NotNil(t, key.Ed25519)
	checkVector(t, rfcRequest(t, "example.com"), key, input, base, signature)
}

func TestRFC9421Section43RSAv15(t *testing.T) {
	t.Parallel()
	// Section 4.3: the proxy's rsa-v1_5-sha256 signature with test-key-rsa
	// (Appendix B.1.1) over the request it forwards.
	const input = `proxy_sig=("@method" "@authority" "@path" "content-digest" "content-type" "content-length" "forwarded");created=1618884480;keyid="test-key-rsa";alg="rsa-v1_5-sha256";expires=1618884540`
	const signature = `proxy_sig=:S6ZzPXSdAMOPjN/6KXfXWNO/f7V6cHm7BXYUh3YD/fRad4BCaRZxP+JH+8XY1I6+8Cy+CM5g92iHgxtRPz+MjniOaYmdkDcnL9cCpXJleXsOckpURl49GwiyUpZ10KHgOEe11sx3G2gxI8S0jnxQB+Pu68U9vVcasqOWAEObtNKKZd8tSFu7LB5YAv0RAGhB8tmpv7sFnIm9y+7X5kXQfi8NMaZaA8i2ZHwpBdg7a6CMfwnnrtflzvZdXAsD3LH2TwevU+/PBPv0B6NMNk93wUs/vfJvye+YuI87HU38lZHowtznbLVdp770I6VHR6WfgS9ddzirrswsE1w5o0LV/g==:`
	const base = `"@method": POST
"@authority": origin.host.internal.example
"@path": /foo
"content-digest": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:
"content-type": application/json
"content-length": 18
"forwarded": for=192.0.2.123;host=example.com;proto=https
"@signature-params": ("@method" "@authority" "@path" "content-digest" "content-type" "content-length" "forwarded");created=1618884480;keyid="test-key-rsa";alg="rsa-v1_5-sha256";expires=1618884540`

	r := rfcRequest(t, "origin.host.internal.example")
	r.Header.Set("Forwarded", "for=192.0.2.123;host=example.com;proto=https")
	key := rfcKey(t, "rfc9421-test-key-rsa.pem", "test-key-rsa")
	require.NotNil(t, key.Private)
	checkVector(t, r, key, input, base, signature)
}

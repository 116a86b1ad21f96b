package signer

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/httpsigverify"
)

const edActor = "https://local.example/users/ed"

var testEd25519 = func() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

func contentDigestOf(body []byte) string {
	sum := sha256.Sum256(body)
	return "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
}

func newBothSigner(t *testing.T, cfg *Config) *Signer {
	t.Helper()
	keys := &StaticKeys{}
	require.NoError(t, keys.Add(actor, keyID, testKey()))
	require.NoError(t, keys.AddKey(edActor, Key{ID: edActor + "#ed", Ed25519: testEd25519}))
	s, err := New(keys, cfg)
	require.NoError(t, err)
	return s
}

func publicKeys(id string) (crypto.PublicKey, error) {
	switch id {
	case keyID:
		return &testKey().PublicKey, nil
	case edActor + "#ed":
		return testEd25519.Public(), nil
	}
	return nil, errors.New("unknown key")
}

func TestSignRFC9421Verifies(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	s := newBothSigner(t, &Config{NowFunc: clock.Now})
	body := []byte(`{"id":"https://local.example/activities/1","type":"Create"}`)
	urls := map[string]string{
		"https://remote.example/inbox":                "https://remote.example/inbox",
		"https://Remote.Example:443/inbox":            "https://remote.example/inbox",
		"https://remote.example:8443/users/bob/inbox": "https://remote.example:8443/users/bob/inbox",
		"http://remote.example:80/inbox?a=b":          "http://remote.example/inbox?a=b",
		"https://bücher.example/inbox":                "https://xn--bcher-kva.example/inbox",
		"https://remote.example/users/a%2Fb/inbox":    "https://remote.example/users/a%2Fb/inbox",
		"https://[2001:db8::1]:8443/inbox":            "https://[2001:db8::1]:8443/inbox",
		"https://remote.example":                      "https://remote.example/",
	}
	for _, who := range []struct{ actor, keyID, alg string }{
		{actor, keyID, AlgRSAv15SHA256},
		{edActor, edActor + "#ed", AlgEd25519},
	} {
		for url, target := range urls {
			t.Run(who.alg+" "+url, func(t *testing.T) {
				r := newRequest(t, url, body)
				require.NoError(t, s.SignWith(context.Background(), r, who.actor, &Options{Scheme: RFC9421, ContentDigest: contentDigestOf(body)}))
				require.Equal(t, contentDigestOf(body), r.Header.Get("Content-Digest"))
				require.Equal(t, `sig1=("@method" "@target-uri" "content-digest");created=1795428000;keyid="`+who.keyID+`";alg="`+who.alg+`"`,
					r.Header.Get("Signature-Input"))
				p, err := httpsigverify.VerifyRFC9421(r, body, publicKeys, &httpsigverify.Options9421{Now: clock.Now(), MaxSkew: time.Hour})
				require.NoError(t, err)
				require.Equal(t, who.keyID, p.KeyID)
				base, err := SignatureBase(r, &SignatureSpec{Components: []Component{{Name: "@target-uri"}}})
				require.NoError(t, err)
				require.Contains(t, string(base), `"@target-uri": `+target+"\n")
			})
		}
	}
}

func TestSignRFC9421FreshPerAttempt(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	s := newBothSigner(t, &Config{NowFunc: clock.Now})
	body := []byte(`{"id":"https://local.example/activities/2"}`)
	o := &Options{Scheme: RFC9421, ContentDigest: contentDigestOf(body)}
	r := newRequest(t, "https://remote.example/inbox", body)
	require.NoError(t, s.SignWith(context.Background(), r, actor, o))
	first := r.Header.Get("Signature")
	clock.Advance(time.Minute)
	require.NoError(t, s.SignWith(context.Background(), r, actor, o))
	require.Len(t, r.Header.Values("Signature"), 1)
	require.Len(t, r.Header.Values("Signature-Input"), 1)
	require.NotEqual(t, first, r.Header.Get("Signature"))
	require.Contains(t, r.Header.Get("Signature-Input"), ";created=1795428060;")
	_, err := httpsigverify.VerifyRFC9421(r, body, publicKeys, &httpsigverify.Options9421{Now: clock.Now(), MaxSkew: time.Hour})
	require.NoError(t, err)
}

func TestEd25519NeverSignsCavage(t *testing.T) {
	t.Parallel()
	s := newBothSigner(t, nil)
	r := newRequest(t, "https://remote.example/inbox", nil)
	err := s.SignWith(context.Background(), r, edActor, &Options{Scheme: Cavage, Digest: digestOf(nil)})
	require.ErrorIs(t, err, ErrCavageEd25519)
	require.Empty(t, r.Header.Get("Signature"))
	require.ErrorIs(t, s.Sign(context.Background(), r, edActor, digestOf(nil)), ErrCavageEd25519)
}

func TestSignRFC9421RefusesKeyIDsItCannotWrite(t *testing.T) {
	t.Parallel()
	keys := &StaticKeys{}
	require.NoError(t, keys.Add(actor, "https://local.example/users/zoë#main-key", testKey()))
	s, err := New(keys, nil)
	require.NoError(t, err)
	r := newRequest(t, "https://remote.example/inbox", nil)
	err = s.SignWith(context.Background(), r, actor, &Options{Scheme: RFC9421, ContentDigest: contentDigestOf(nil)})
	require.ErrorContains(t, err, "not printable ASCII")
	require.Empty(t, r.Header.Get("Signature"))
}

func TestSignRFC9421HonoursAcceptSignature(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	s := newBothSigner(t, &Config{NowFunc: clock.Now})
	body := []byte(`{"id":"https://local.example/activities/3"}`)
	tests := []struct {
		name, accept, input string
	}{
		{
			"components, nonce, tag and expires",
			`app=("@method" "@authority" "@path" "content-digest");keyid="` + keyID + `";nonce="n-1";tag="fedi";expires`,
			`app=("@method" "@authority" "@path" "content-digest" "@target-uri");created=1795428000;keyid="` + keyID + `";alg="rsa-v1_5-sha256";nonce="n-1";tag="fedi";expires=1795428300`,
		},
		{
			"first satisfiable member",
			`pss=("@method");alg="rsa-pss-sha512", other=("@method");keyid="someone-else", ok=("@method" "@query");alg="rsa-v1_5-sha256"`,
			`ok=("@method" "@query" "@target-uri" "content-digest");created=1795428000;keyid="` + keyID + `";alg="rsa-v1_5-sha256"`,
		},
		{
			"nothing satisfiable: the default signature",
			`a=("@status"), b=("x-missing-header")`,
			`sig1=("@method" "@target-uri" "content-digest");created=1795428000;keyid="` + keyID + `";alg="rsa-v1_5-sha256"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			accept, err := ParseAcceptSignature(tt.accept)
			require.NoError(t, err)
			r := newRequest(t, "https://remote.example/inbox?x=1", body)
			require.NoError(t, s.SignWith(context.Background(), r, actor, &Options{Scheme: RFC9421, ContentDigest: contentDigestOf(body), Accept: accept}))
			require.Equal(t, tt.input, r.Header.Get("Signature-Input"))
			_, err = httpsigverify.VerifyRFC9421(r, body, publicKeys, nil)
			require.NoError(t, err)
		})
	}
}

func TestParseSignatureFields(t *testing.T) {
	t.Parallel()
	good := map[string]string{
		`sig1=("@method" "@target-uri");created=1;keyid="k"`:              `sig1=("@method" "@target-uri");created=1;keyid="k"`,
		` a=("x";req "y";key="sig1");created=2 , b=();alg="ed25519"  `:    `a=("x";req "y";key="sig1");created=2, b=();alg="ed25519"`,
		`a=("@method");created=1, a=("@path");created=2`:                  `a=("@path");created=2`,
		`s=("a");tag="q\"\\";nonce="n";x=?0;y=:AAE=:;z=tok/en;w=1.5;v=-3`: `s=("a");tag="q\"\\";nonce="n";x=?0;y=:AAE=:;z=tok/en;w=1.5;v=-3`,
	}
	for in, want := range good {
		specs, err := ParseSignatureInput(in)
		require.NoError(t, err, in)
		got := ""
		for i, s := range specs {
			if i > 0 {
				got += ", "
			}
			got += s.String()
		}
		require.Equal(t, want, got)
	}
	bad := []string{
		``, `sig1`, `sig1=`, `sig1=("a"`, `sig1=(a)`, `Sig=("a")`, `sig1=("A")`, `sig1=("")`,
		`sig1=("a"),`, `sig1=("a") x`, `sig1=("a");created="1"`, `sig1=("a");keyid=1`,
		`sig1=("a");created=1234567890123456`, `sig1=("a\q")`, `sig1=("a");x=:!!:`, `sig1=("a");x=?2`,
		`sig1=("a");created`, `sig1=("é")`, `sig1=("a") ;created=1`,
	}
	for _, in := range bad {
		_, err := ParseSignatureInput(in)
		require.Error(t, err, in)
	}
	// Accept-Signature allows created and expires without a value.
	specs, err := ParseAcceptSignature(`sig1=("@method");created;expires;keyid="k"`)
	require.NoError(t, err)
	p, ok := specs[0].Param("created")
	require.True(t, ok)
	require.Equal(t, ParamBoolean, p.Kind)
	_, err = ParseAcceptSignature(`sig1=("@method");keyid=k`)
	require.Error(t, err)
}

// fuzzRoundTrip checks that whatever parses serialises to a value that
// parses to the same thing.
func fuzzRoundTrip(t *testing.T, parse func(string) ([]SignatureSpec, error), in string) {
	specs, err := parse(in)
	if err != nil {
		return
	}
	out := ""
	for i, s := range specs {
		if i > 0 {
			out += ", "
		}
		out += s.String()
	}
	again, err := parse(out)
	if err != nil {
		t.Fatalf("%q parsed, but its serialisation %q does not: %v", in, out, err)
	}
	if len(again) != len(specs) {
		t.Fatalf("%q: %d members, %d after a round trip", in, len(specs), len(again))
	}
	for i := range specs {
		if a, b := specs[i].String(), again[i].String(); a != b {
			t.Fatalf("%q: member %d is %q, %q after a round trip", in, i, a, b)
		}
	}
}

var fuzzSeeds = []string{
	`sig1=("@method" "@target-uri" "content-digest");created=1618884473;keyid="test-key-rsa";alg="rsa-v1_5-sha256"`,
	`sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"`,
	`sig1=("@method" "@authority";req "content-digest";sf);created;expires;nonce="x";tag="app", proxy=("forwarded")`,
	`a=();x=?1;y=:AAE=:;z=tok;w=1.25`,
}

func FuzzParseSignatureInput(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) { fuzzRoundTrip(t, ParseSignatureInput, in) })
}

func FuzzParseAcceptSignature(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) { fuzzRoundTrip(t, ParseAcceptSignature, in) })
}

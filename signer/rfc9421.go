package signer

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// RFC 9421 algorithm names (RFC 9421 §3.3).
const (
	// AlgRSAv15SHA256 is RSASSA-PKCS1-v1_5 with SHA-256, for RSA keys.
	AlgRSAv15SHA256 = "rsa-v1_5-sha256"
	// AlgEd25519 is EdDSA over Curve25519, for Ed25519 keys.
	AlgEd25519 = "ed25519"
)

// DefaultLabel is the label of the signature this package makes unless an
// Accept-Signature asks for another.
const DefaultLabel = "sig1"

// ExpiresAfterDefault is how long after created a signature expires when
// an Accept-Signature asks for an expires parameter without a value.
const ExpiresAfterDefault = 5 * 60

// DefaultComponents are the components every RFC 9421 delivery covers, in
// order. "@target-uri" rather than "@authority" "@path" "@query": Mastodon
// 4.5+ verifies RFC 9421 only with "@method" "@target-uri" "content-digest"
// covered and refuses the split form, while Fedify and the other verifiers
// accept any components.
var DefaultComponents = []string{"@method", "@target-uri", "content-digest"}

// ErrUnsupportedComponent is returned (wrapped) for a covered component
// this package cannot compute: response components, ;req, ;sf, ;bs, ;key
// and @query-param.
var ErrUnsupportedComponent = errors.New("signer: unsupported signature component")

// SignatureBase returns the signature base of r for spec (RFC 9421 §2.5):
// a line `"name": value` per covered component and the
// `"@signature-params"` line, joined by line feeds. r is read as a client
// request about to be sent: the authority is r.Host (r.URL.Host when
// empty), the path the escaped path.
func SignatureBase(r *http.Request, spec *SignatureSpec) ([]byte, error) {
	b := make([]byte, 0, 512)
	for _, c := range spec.Components {
		v, err := componentValue(r, c)
		if err != nil {
			return nil, err
		}
		b = appendString(b, c.Name)
		b = append(b, ": "...)
		b = append(b, v...)
		b = append(b, '\n')
	}
	b = append(b, `"@signature-params": `...)
	return spec.AppendValue(b), nil
}

// componentValue returns the value of one covered component of r.
func componentValue(r *http.Request, c Component) (string, error) {
	if len(c.Params) > 0 {
		return "", fmt.Errorf("%w: %q with parameters", ErrUnsupportedComponent, c.Name)
	}
	u := r.URL
	authority := r.Host
	if authority == "" && u != nil {
		authority = u.Host
	}
	authority = strings.ToLower(authority)
	if strings.HasPrefix(c.Name, "@") && c.Name != "@method" && u == nil {
		return "", fmt.Errorf("signer: request without URL")
	}
	switch c.Name {
	case "@method":
		return r.Method, nil
	case "@authority":
		return authority, nil
	case "@scheme":
		return strings.ToLower(u.Scheme), nil
	case "@target-uri":
		return strings.ToLower(u.Scheme) + "://" + authority + requestTarget(r), nil
	case "@request-target":
		return requestTarget(r), nil
	case "@path":
		return escapedPath(r), nil
	case "@query":
		return "?" + u.RawQuery, nil
	}
	if strings.HasPrefix(c.Name, "@") {
		return "", fmt.Errorf("%w: %q", ErrUnsupportedComponent, c.Name)
	}
	vals := r.Header[textproto.CanonicalMIMEHeaderKey(c.Name)]
	if len(vals) == 0 && c.Name == "content-length" && r.ContentLength >= 0 && r.Body != nil {
		return strconv.FormatInt(r.ContentLength, 10), nil
	}
	if len(vals) == 0 {
		return "", fmt.Errorf("signer: covered header %q is missing", c.Name)
	}
	var b strings.Builder
	for i, v := range vals {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strings.TrimSpace(v))
	}
	return b.String(), nil
}

// escapedPath is the path as sent on the wire: "/" for an empty one.
func escapedPath(r *http.Request) string {
	p := r.URL.EscapedPath()
	if p == "" {
		return "/"
	}
	return p
}

// requestTarget is the origin-form request target as sent.
func requestTarget(r *http.Request) string {
	t := escapedPath(r)
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		t += "?" + r.URL.RawQuery
	}
	return t
}

// algorithmOf returns the RFC 9421 algorithm name of key.
func algorithmOf(key Key) string {
	if key.Ed25519 != nil {
		return AlgEd25519
	}
	return AlgRSAv15SHA256
}

// signBase signs an RFC 9421 signature base with key.
func signBase(key Key, base []byte) ([]byte, error) {
	if key.Ed25519 != nil {
		return ed25519.Sign(key.Ed25519, base), nil
	}
	sum := sha256.Sum256(base)
	return rsa.SignPKCS1v15(rand.Reader, key.Private, crypto.SHA256, sum[:])
}

// SignSpec signs r with key as spec describes and sets the Signature-Input
// and Signature headers to that one signature, replacing earlier values.
// spec must carry every parameter to sign (created, keyid, alg); SignSpec
// adds none. It is the building block of Signer.SignWith, exported so that
// the RFC's examples can be reproduced exactly.
func SignSpec(r *http.Request, key Key, spec *SignatureSpec) error {
	if err := checkStrings(spec); err != nil {
		return err
	}
	base, err := SignatureBase(r, spec)
	if err != nil {
		return err
	}
	sig, err := signBase(key, base)
	if err != nil {
		return fmt.Errorf("signer: signing: %w", err)
	}
	input := spec.AppendValue(append([]byte(spec.Label), '='))
	out := make([]byte, 0, len(spec.Label)+3+base64.StdEncoding.EncodedLen(len(sig)))
	out = append(out, spec.Label...)
	out = append(out, "=:"...)
	out = base64.StdEncoding.AppendEncode(out, sig)
	out = append(out, ':')
	r.Header.Set("Signature-Input", string(input))
	r.Header.Set("Signature", string(out))
	return nil
}

// rfc9421Spec returns the signature to make for key at created: the
// default one, or the first Accept-Signature member this key can satisfy,
// with the components it asks for (plus the default ones it leaves out) and
// its nonce, tag and expires.
func rfc9421Spec(r *http.Request, key Key, created int64, accept []SignatureSpec) SignatureSpec {
	alg := algorithmOf(key)
	spec := SignatureSpec{
		Label:      DefaultLabel,
		Components: make([]Component, 0, len(DefaultComponents)+4),
		Params:     []Param{IntParam("created", created), StringParam("keyid", key.ID), StringParam("alg", alg)},
	}
	if want, ok := satisfiable(r, key, accept); ok {
		spec.Label = want.Label
		for _, c := range want.Components {
			spec.Components = append(spec.Components, Component{Name: c.Name})
		}
		for _, p := range want.Params {
			switch {
			case (p.Key == "nonce" || p.Key == "tag") && p.Kind == ParamString:
				spec.Params = append(spec.Params, p)
			case p.Key == "expires" && p.Kind == ParamBoolean && p.Bool:
				spec.Params = append(spec.Params, IntParam("expires", created+ExpiresAfterDefault))
			case p.Key == "expires" && p.Kind == ParamInteger && p.Int > created:
				spec.Params = append(spec.Params, p)
			}
		}
	}
	for _, name := range DefaultComponents {
		if !spec.Covers(name) {
			spec.Components = append(spec.Components, Component{Name: name})
		}
	}
	return spec
}

// satisfiable returns the first member of accept that key can sign: its
// keyid (if any) is key's, its alg (if any) key's algorithm, and every
// component it asks for can be computed for r.
func satisfiable(r *http.Request, key Key, accept []SignatureSpec) (SignatureSpec, bool) {
next:
	for _, want := range accept {
		if p, ok := want.Param("keyid"); ok && p.Str != key.ID {
			continue
		}
		if p, ok := want.Param("alg"); ok && p.Str != algorithmOf(key) {
			continue
		}
		for _, c := range want.Components {
			if _, err := componentValue(r, c); err != nil {
				continue next
			}
		}
		return want, true
	}
	return SignatureSpec{}, false
}

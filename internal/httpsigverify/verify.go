// Package httpsigverify verifies draft-cavage HTTP signatures
// (draft-cavage-http-signatures-12) on incoming requests the way fediverse
// servers do, using only the standard library. It is written from the
// specification rather than from the signing library, so that tests of the
// signer and the test inboxes check signatures independently of the code that
// made them.
//
// Only RSA PKCS#1 v1.5 with SHA-256 is supported, which is what ActivityPub
// servers use; the algorithm parameter may be "rsa-sha256" or "hs2019".
package httpsigverify

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"
	"time"
)

// ErrInvalid is matched by every verification failure.
var ErrInvalid = errors.New("invalid HTTP signature")

// DefaultRequired lists the signed components a delivery must cover, as
// Mastodon and GoToSocial require for a POST to an inbox.
var DefaultRequired = []string{"(request-target)", "host", "date", "digest"}

// Params are the parsed parameters of a Signature header.
type Params struct {
	// KeyID identifies the key, usually the actor's public key IRI.
	KeyID string
	// Algorithm is the label as sent ("rsa-sha256", "hs2019" or empty).
	Algorithm string
	// Headers are the signed components in order, lower-case.
	Headers []string
	// Signature is the decoded signature.
	Signature []byte
}

// KeyFunc returns the public key for a keyId.
type KeyFunc func(keyID string) (*rsa.PublicKey, error)

// Options tune Verify. The zero value checks the DefaultRequired components
// and does not check the Date against a clock.
type Options struct {
	// Required lists components the signature must cover; nil means
	// DefaultRequired.
	Required []string
	// Now and MaxSkew, when both are set, bound how far the Date header may
	// be from Now.
	Now     time.Time
	MaxSkew time.Duration
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ParseSignature parses the value of a Signature header:
// keyId="...",algorithm="...",headers="...",signature="...".
func ParseSignature(v string) (*Params, error) {
	p := &Params{}
	var sig string
	seen := map[string]bool{}
	for rest := strings.TrimSpace(v); rest != ""; {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return nil, invalid("malformed parameter in %q", v)
		}
		name := strings.TrimSpace(rest[:eq])
		rest = rest[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				return nil, invalid("unterminated value for %s", name)
			}
			val, rest = rest[1:1+end], rest[2+end:]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			val, rest = rest[:end], rest[end:]
		}
		rest = strings.TrimSpace(rest)
		if rest != "" {
			if rest[0] != ',' {
				return nil, invalid("expected ',' after %s", name)
			}
			rest = strings.TrimSpace(rest[1:])
		}
		if seen[name] {
			return nil, invalid("duplicate parameter %s", name)
		}
		seen[name] = true
		switch name {
		case "keyId":
			p.KeyID = val
		case "algorithm":
			p.Algorithm = val
		case "headers":
			p.Headers = strings.Fields(strings.ToLower(val))
		case "signature":
			sig = val
		}
	}
	if p.KeyID == "" {
		return nil, invalid("missing keyId")
	}
	if sig == "" {
		return nil, invalid("missing signature")
	}
	if !seen["headers"] {
		p.Headers = []string{"date"} // the specification's default
	}
	b, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return nil, invalid("signature is not base64: %v", err)
	}
	p.Signature = b
	return p, nil
}

// SigningString rebuilds the string that was signed, from the request as the
// server received it: each component "name: value" on its own line, the
// (request-target) being the lower-case method, a space and the request URI
// as sent, host taken from r.Host, and repeated headers joined with ", ".
func SigningString(r *http.Request, headers []string) (string, error) {
	var b strings.Builder
	for i, h := range headers {
		if i > 0 {
			b.WriteByte('\n')
		}
		switch h {
		case "(request-target)":
			// The origin-form as sent; a client request or an absolute-form
			// request line falls back to the parsed URL.
			target := r.RequestURI
			if !strings.HasPrefix(target, "/") {
				target = r.URL.RequestURI()
			}
			b.WriteString("(request-target): ")
			b.WriteString(strings.ToLower(r.Method))
			b.WriteByte(' ')
			b.WriteString(target)
		case "host":
			host := r.Host
			if host == "" {
				host = r.Header.Get("Host")
			}
			if host == "" {
				return "", invalid("signed header host is missing")
			}
			b.WriteString("host: ")
			b.WriteString(host)
		default:
			if strings.HasPrefix(h, "(") {
				return "", invalid("unsupported component %s", h)
			}
			vals, ok := r.Header[textproto.CanonicalMIMEHeaderKey(h)]
			if !ok {
				return "", invalid("signed header %s is missing", h)
			}
			b.WriteString(h)
			b.WriteString(": ")
			for j, v := range vals {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString(strings.TrimSpace(v))
			}
		}
	}
	return b.String(), nil
}

// VerifyDigest checks a Digest header ("SHA-256=<base64>", possibly among
// other comma-separated digests) against body.
func VerifyDigest(header string, body []byte) error {
	if header == "" {
		return invalid("no Digest header")
	}
	for _, part := range strings.Split(header, ",") {
		alg, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || !strings.EqualFold(alg, "SHA-256") {
			continue
		}
		sum := sha256.Sum256(body)
		want := base64.StdEncoding.EncodeToString(sum[:])
		if subtle.ConstantTimeCompare([]byte(val), []byte(want)) != 1 {
			return invalid("Digest does not match the body")
		}
		return nil
	}
	return invalid("no SHA-256 digest in %q", header)
}

// Verify checks the Signature header of r, and the Digest header against
// body, and returns the parsed parameters. key is called with the keyId.
func Verify(r *http.Request, body []byte, key KeyFunc, opts *Options) (*Params, error) {
	if opts == nil {
		opts = &Options{}
	}
	vals := r.Header.Values("Signature")
	if len(vals) != 1 {
		return nil, invalid("want exactly one Signature header, have %d", len(vals))
	}
	p, err := ParseSignature(vals[0])
	if err != nil {
		return nil, err
	}
	switch strings.ToLower(p.Algorithm) {
	case "", "rsa-sha256", "hs2019":
	default:
		return nil, invalid("unsupported algorithm %q", p.Algorithm)
	}
	required := opts.Required
	if required == nil {
		required = DefaultRequired
	}
	for _, want := range required {
		found := false
		for _, h := range p.Headers {
			if h == want {
				found = true
				break
			}
		}
		if !found {
			return nil, invalid("signature does not cover %s", want)
		}
	}
	if r.Header.Get("Digest") != "" || containsString(p.Headers, "digest") {
		if err := VerifyDigest(r.Header.Get("Digest"), body); err != nil {
			return nil, err
		}
	}
	if !opts.Now.IsZero() && opts.MaxSkew > 0 {
		d, err := http.ParseTime(r.Header.Get("Date"))
		if err != nil {
			return nil, invalid("bad Date header: %v", err)
		}
		if skew := opts.Now.Sub(d).Abs(); skew > opts.MaxSkew {
			return nil, invalid("Date is %s away from now", skew)
		}
	}
	s, err := SigningString(r, p.Headers)
	if err != nil {
		return nil, err
	}
	pub, err := key(p.KeyID)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrInvalid, p.KeyID, err)
	}
	sum := sha256.Sum256([]byte(s))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], p.Signature); err != nil {
		return nil, invalid("signature does not verify with key %s", p.KeyID)
	}
	return p, nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

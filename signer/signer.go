package signer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/superseriousbusiness/httpsig"

	"github.com/apqueue/apqueue/internal/domain"
)

// signedHeaders are the components every signature covers, in order.
var signedHeaders = []string{httpsig.RequestTarget, "host", "date", "digest"}

// Config configures a Signer. A nil *Config means defaults.
type Config struct {
	// NowFunc returns the time written in the Date header. Default: time.Now.
	NowFunc func() time.Time
}

// Signer signs outgoing ActivityPub deliveries with draft-cavage HTTP
// signatures, as Mastodon, GoToSocial, Misskey, Lemmy and Pleroma expect
// (RSA PKCS#1 v1.5 with SHA-256, labelled algorithm="rsa-sha256", covering
// "(request-target) host date digest"), or with RFC 9421 HTTP Message
// Signatures (see SignWith). It is safe for concurrent use.
//
// A Signer satisfies sender.Signer.
type Signer struct {
	keys KeySource
	now  func() time.Time
	pool sync.Pool // of httpsig.SignerWithOptions, which are not goroutine-safe

	// noPool builds an httpsig signer per call instead; benchmarks compare.
	noPool bool
}

// New returns a Signer that takes actors' keys from keys.
func New(keys KeySource, cfg *Config) (*Signer, error) {
	if keys == nil {
		return nil, errors.New("signer: nil KeySource")
	}
	if cfg == nil {
		cfg = &Config{}
	}
	s := &Signer{keys: keys, now: cfg.NowFunc}
	if s.now == nil {
		s.now = time.Now
	}
	// Fail at construction, not at the first delivery, if httpsig cannot
	// build the signer we need.
	hs, err := newHTTPSigner()
	if err != nil {
		return nil, err
	}
	s.pool.Put(hs)
	return s, nil
}

func newHTTPSigner() (httpsig.SignerWithOptions, error) {
	hs, algo, err := httpsig.NewSigner([]httpsig.Algorithm{httpsig.RSA_SHA256}, httpsig.DigestSha256, signedHeaders, httpsig.Signature, 0)
	if err != nil {
		return nil, fmt.Errorf("signer: creating httpsig signer: %w", err)
	}
	if algo != httpsig.RSA_SHA256 {
		return nil, fmt.Errorf("signer: httpsig chose %s instead of rsa-sha256", algo)
	}
	return hs, nil
}

// ErrCavageEd25519 is returned (wrapped) when a draft-cavage signature is
// asked for with an Ed25519 key. Most cavage verifiers know only RSA, and
// a domain's remembered scheme does not say which key type it accepted, so
// apqueue never sends one: an Ed25519 key is used with RFC 9421 only.
var ErrCavageEd25519 = errors.New("signer: Ed25519 keys are not sent with draft-cavage signatures")

// Options say how SignWith signs a request.
type Options struct {
	// Scheme is the signature scheme. Default: Cavage.
	Scheme Scheme
	// Digest is the Digest header value of the body for Cavage,
	// "SHA-256=<base64>" (sender.Activity.Digest). Required for Cavage.
	Digest string
	// ContentDigest is the RFC 9530 Content-Digest header value of the body
	// for RFC9421, "sha-256=:<base64>:" (sender.Activity.ContentDigest).
	// Required for RFC9421.
	ContentDigest string
	// Accept is the receiver's Accept-Signature (ParseAcceptSignature), for
	// RFC9421: the first member this actor's key can satisfy sets the
	// label, the components (the default ones are added when missing) and
	// the nonce, tag and expires parameters. Default: none.
	Accept []SignatureSpec
}

// Sign signs r, a POST of a body whose Digest header value ("SHA-256=...",
// see sender.Activity.Digest) is digest, with the key of actor, with a
// draft-cavage signature. It is SignWith with Scheme Cavage.
func (s *Signer) Sign(ctx context.Context, r *http.Request, actor, digest string) error {
	return s.SignWith(ctx, r, actor, &Options{Scheme: Cavage, Digest: digest})
}

// SignWith signs r, a POST to an inbox, with the key of actor and the
// scheme of o. It sets Host (normalised, with any non-default port) and
// r.Host to the signed host, and replaces any earlier signature headers, so
// a request built for a retry is signed anew:
//
//   - Cavage: Date (fresh), Digest and Signature, covering
//     "(request-target) host date digest", labelled algorithm="rsa-sha256".
//   - RFC9421: Content-Digest, Signature-Input and Signature, one signature
//     labelled "sig1" covering "@method" "@target-uri" "content-digest" with
//     created (fresh), keyid and alg parameters, unless o.Accept asks for
//     more. A Date header is set too, for receivers that log it.
func (s *Signer) SignWith(ctx context.Context, r *http.Request, actor string, o *Options) error {
	if o == nil {
		o = &Options{}
	}
	scheme := o.Scheme
	if scheme == "" {
		scheme = Cavage
	}
	switch {
	case !scheme.Valid():
		return fmt.Errorf("signer: unknown signature scheme %q", scheme)
	case scheme == Cavage && o.Digest == "":
		return errors.New("signer: empty digest")
	case scheme == RFC9421 && o.ContentDigest == "":
		return errors.New("signer: empty content digest")
	case r.URL == nil:
		return errors.New("signer: request without URL")
	}
	key, err := s.keys.Key(ctx, actor)
	if err != nil {
		return fmt.Errorf("signer: key of actor %s: %w", actor, err)
	}
	if err := key.check(actor); err != nil {
		return err
	}
	if scheme == Cavage && key.Ed25519 != nil {
		return fmt.Errorf("%w (actor %s)", ErrCavageEd25519, actor)
	}
	rawHost := r.Host
	if rawHost == "" {
		rawHost = r.URL.Host
	}
	host, err := domain.Normalize(rawHost, r.URL.Scheme)
	if err != nil {
		return fmt.Errorf("signer: host of %s: %w", r.URL.Redacted(), err)
	}
	r.Host = host
	now := s.now()
	r.Header.Set("Date", now.UTC().Format(http.TimeFormat))
	if scheme == RFC9421 {
		r.Header.Set("Content-Digest", o.ContentDigest)
		spec := rfc9421Spec(r, key, now.Unix(), o.Accept)
		if err := SignSpec(r, key, &spec); err != nil {
			return fmt.Errorf("signer: signing for actor %s: %w", actor, err)
		}
		return nil
	}
	return s.signCavage(r, actor, key, o.Digest)
}

// signCavage signs r with a draft-cavage signature. Host and Date are set.
func (s *Signer) signCavage(r *http.Request, actor string, key Key, digest string) error {
	h := r.Header
	h.Set("Host", r.Host)
	h.Set("Digest", digest)
	h.Del("Signature")
	h.Del("Signature-Input")
	// httpsig signs URL.Path, the decoded path; the wire carries the
	// escaped one, and "/" for an empty path. Sign what is sent.
	target := r
	if esc := escapedPath(r); esc != r.URL.Path {
		u := *r.URL
		u.Path, u.RawPath = esc, ""
		target = r.WithContext(r.Context())
		target.URL = &u
	}
	var hs httpsig.SignerWithOptions
	if !s.noPool {
		hs, _ = s.pool.Get().(httpsig.SignerWithOptions)
	}
	if hs == nil {
		var err error
		if hs, err = newHTTPSigner(); err != nil {
			return err
		}
	}
	// A nil body keeps httpsig from computing the digest again: the Digest
	// header set above is signed as it stands.
	err := hs.SignRequest(key.Private, key.ID, target, nil)
	if !s.noPool {
		s.pool.Put(hs)
	}
	h.Del("Host") // net/http sends r.Host; keep the header map clean
	if err != nil {
		return fmt.Errorf("signer: signing for actor %s: %w", actor, err)
	}
	// httpsig labels every signature "hs2019"; Mastodon and others want the
	// real algorithm.
	sig := h.Get("Signature")
	h.Set("Signature", strings.Replace(sig, `algorithm="hs2019"`, `algorithm="rsa-sha256"`, 1))
	return nil
}

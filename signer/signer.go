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
// signatures, as Mastodon, GoToSocial, Misskey, Lemmy and Pleroma expect:
// RSA PKCS#1 v1.5 with SHA-256, labelled algorithm="rsa-sha256", covering
// "(request-target) host date digest". It is safe for concurrent use.
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

// Sign signs r, a POST of a body whose Digest header value ("SHA-256=...",
// see sender.Activity.Digest) is digest, with the key of actor. It sets Host
// (normalised, with any non-default port), a fresh Date, Digest and
// Signature, replacing earlier values, so a request built for a retry is
// signed anew. r.Host is set to the signed host so that the host sent is the
// host signed.
func (s *Signer) Sign(ctx context.Context, r *http.Request, actor, digest string) error {
	if digest == "" {
		return errors.New("signer: empty digest")
	}
	if r.URL == nil {
		return errors.New("signer: request without URL")
	}
	key, err := s.keys.Key(ctx, actor)
	if err != nil {
		return fmt.Errorf("signer: key of actor %s: %w", actor, err)
	}
	if err := checkKey(actor, key.Private); err != nil {
		return err
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
	h := r.Header
	h.Set("Host", host)
	h.Set("Date", s.now().UTC().Format(http.TimeFormat))
	h.Set("Digest", digest)
	h.Del("Signature")

	// httpsig signs URL.Path, the decoded path; the wire carries the
	// escaped one, and "/" for an empty path. Sign what is sent.
	target := r
	esc := r.URL.EscapedPath()
	if esc == "" {
		esc = "/"
	}
	if esc != r.URL.Path {
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
		if hs, err = newHTTPSigner(); err != nil {
			return err
		}
	}
	// A nil body keeps httpsig from computing the digest again: the Digest
	// header set above is signed as it stands.
	err = hs.SignRequest(key.Private, key.ID, target, nil)
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

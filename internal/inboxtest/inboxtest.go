// Package inboxtest runs ActivityPub inboxes on loopback for tests, benchmarks
// and the quick start. An inbox verifies HTTP signatures with
// internal/httpsigverify (independently of the signer), draft-cavage, RFC
// 9421 or both as configured, records what it accepts with duplicates
// counted, and can be told to be slow or to fail.
//
//	inbox := inboxtest.New(&inboxtest.Config{Keys: map[string]*rsa.PublicKey{keyID: &key.PublicKey}})
//	defer inbox.Close()
//	// deliver to inbox.Inbox() with a sender that allows loopback
//	err := inbox.Wait(ctx, 10) // ten distinct activities accepted
package inboxtest

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/apqueue/apqueue/internal/httpsigverify"
)

// MaxBodyBytes is the largest request body an inbox reads.
const MaxBodyBytes = 1 << 20

// MaxDateSkewDefault is how far a signed request's Date may be from the
// inbox's clock, as in Mastodon.
const MaxDateSkewDefault = time.Hour

// Schemes says which HTTP signature schemes an inbox accepts.
type Schemes uint8

const (
	// AcceptCavage accepts draft-cavage signatures (as older servers do).
	AcceptCavage Schemes = 1 << iota
	// AcceptRFC9421 accepts RFC 9421 signatures (as a server that dropped
	// draft-cavage would).
	AcceptRFC9421
	// AcceptBoth accepts either, as Mastodon 4.5+ and Fedify do.
	AcceptBoth = AcceptCavage | AcceptRFC9421
)

// Config configures an inbox. A nil *Config accepts every POST unsigned.
type Config struct {
	// Schemes are the signature schemes the inbox accepts when it checks
	// signatures; a request signed otherwise is answered 401. Default:
	// AcceptCavage.
	Schemes Schemes
	// AcceptSignature, when not empty, is sent as the Accept-Signature
	// header of every 401 (RFC 9421 §5.1). Default: none.
	AcceptSignature string
	// Keys maps keyId to public key. When non-nil, every request must carry
	// a valid signature made with one of these keys (or one added with
	// AddKey or AddPublicKey) in one of Schemes, or it is answered 401: a
	// draft-cavage one covering (request-target), host, date and digest,
	// an RFC 9421 one covering "@method" "@target-uri" "content-digest".
	// Default: nil, signatures are not checked.
	Keys map[string]*rsa.PublicKey
	// MaxDateSkew bounds the Date of signed requests around NowFunc();
	// negative disables the check. Default: MaxDateSkewDefault (1 h).
	MaxDateSkew time.Duration
	// Latency delays every response. Default: 0.
	Latency time.Duration
	// Failures schedules failing responses. Default: none.
	Failures Failures
	// NowFunc is the inbox's clock, for Failures.For and MaxDateSkew.
	// Default: time.Now.
	NowFunc func() time.Time
}

// Failures schedules failing responses, counted from the server's start or
// from the last SetFailures call. A request fails if either rule applies.
type Failures struct {
	// First fails the first First requests.
	First int
	// For fails every request for this long.
	For time.Duration
	// Status is the failure status. Default: 503 Service Unavailable.
	Status int
	// RetryAfter, when not empty, is sent as the Retry-After header of
	// failure responses ("30" or an HTTP date).
	RetryAfter string
}

// Activity is one accepted delivery.
type Activity struct {
	// ID is the "id" of the JSON body, or "sha256:<hex>" of the body when it
	// has none.
	ID string
	// Body is the request body as received.
	Body []byte
	// Path is the request path (the inbox).
	Path string
	// KeyID is the keyId of the signature, empty when unchecked.
	KeyID string
	// Scheme is the signature scheme verified: "cavage" or "rfc9421",
	// empty when unchecked.
	Scheme string
	// RequestURI is the request target as sent, escapes included.
	RequestURI string
	// Received is when the inbox accepted it (NowFunc).
	Received time.Time
}

// Stats counts what an inbox saw.
type Stats struct {
	// Requests counts every request.
	Requests int
	// Accepted counts requests answered 202, duplicates included.
	Accepted int
	// Unique counts distinct activity IDs accepted.
	Unique int
	// Duplicates counts accepted requests whose activity ID was already
	// accepted: Accepted - Unique.
	Duplicates int
	// Failed counts requests failed by the failure schedule.
	Failed int
	// Rejected counts requests refused for a bad method, body or signature.
	Rejected int
	// Cavage and RFC9421 count the requests accepted with each signature
	// scheme.
	Cavage, RFC9421 int
	// MaxInFlight is the most requests the inbox was handling at once.
	MaxInFlight int
}

// Server is a running test inbox on loopback. It is safe for concurrent use.
type Server struct {
	srv *httptest.Server
	now func() time.Time

	mu           sync.Mutex
	keys         map[string]crypto.PublicKey
	schemes      Schemes
	acceptSig    string
	maxSkew      time.Duration
	latency      time.Duration
	failures     Failures
	failuresFrom time.Time
	failuresSeen int // requests since failuresFrom
	received     []Activity
	counts       map[string]int
	stats        Stats
	inFlight     int
	changed      chan struct{} // closed and replaced when a delivery is accepted
	lastReject   string
}

// New starts an inbox on a loopback port. Close it when done.
func New(cfg *Config) *Server {
	if cfg == nil {
		cfg = &Config{}
	}
	s := &Server{
		now:       cfg.NowFunc,
		maxSkew:   cfg.MaxDateSkew,
		latency:   cfg.Latency,
		counts:    make(map[string]int),
		changed:   make(chan struct{}),
		schemes:   cfg.Schemes,
		acceptSig: cfg.AcceptSignature,
	}
	if s.schemes == 0 {
		s.schemes = AcceptCavage
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxSkew == 0 {
		s.maxSkew = MaxDateSkewDefault
	}
	if cfg.Keys != nil {
		s.keys = make(map[string]crypto.PublicKey, len(cfg.Keys))
		for id, k := range cfg.Keys {
			s.keys[id] = k
		}
	}
	s.setFailuresLocked(cfg.Failures)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Close shuts the inbox down, waiting for requests in progress.
func (s *Server) Close() { s.srv.Close() }

// URL is the inbox server's base URL, "http://127.0.0.1:<port>".
func (s *Server) URL() string { return s.srv.URL }

// Domain is the server's host:port, the domain the queue keys it by.
func (s *Server) Domain() string { return strings.TrimPrefix(s.srv.URL, "http://") }

// Inbox is the URL of a personal inbox on the server. Every path accepts
// deliveries; the path is recorded in Activity.Path.
func (s *Server) Inbox() string { return s.srv.URL + "/users/test/inbox" }

// SharedInbox is the URL of the server's shared inbox.
func (s *Server) SharedInbox() string { return s.srv.URL + "/inbox" }

// AddKey lets the inbox verify signatures made with keyID, and turns
// signature checking on.
func (s *Server) AddKey(keyID string, pub *rsa.PublicKey) { s.AddPublicKey(keyID, pub) }

// AddPublicKey is AddKey for an *rsa.PublicKey or an ed25519.PublicKey
// (RFC 9421 only).
func (s *Server) AddPublicKey(keyID string, pub crypto.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = make(map[string]crypto.PublicKey)
	}
	s.keys[keyID] = pub
}

// SetSchemes changes the signature schemes the inbox accepts, as a server
// that upgrades does.
func (s *Server) SetSchemes(sc Schemes) {
	s.mu.Lock()
	s.schemes = sc
	s.mu.Unlock()
}

// SetLatency changes the delay of every response.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// SetFailures replaces the failure schedule, counting from now; the zero
// Failures stops failing.
func (s *Server) SetFailures(f Failures) {
	s.mu.Lock()
	s.setFailuresLocked(f)
	s.mu.Unlock()
}

func (s *Server) setFailuresLocked(f Failures) {
	if f.Status == 0 {
		f.Status = http.StatusServiceUnavailable
	}
	s.failures, s.failuresFrom, s.failuresSeen = f, s.now(), 0
}

// Received returns the accepted deliveries in arrival order.
func (s *Server) Received() []Activity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Activity(nil), s.received...)
}

// Count returns how many times the activity with this ID was accepted.
func (s *Server) Count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[id]
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// LastRejection returns why the last rejected request was refused, for
// test failure messages.
func (s *Server) LastRejection() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastReject
}

// Wait blocks until at least n distinct activities have been accepted or ctx
// ends.
func (s *Server) Wait(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		unique, ch := s.stats.Unique, s.changed
		s.mu.Unlock()
		if unique >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("inboxtest: %d of %d activities received: %w", unique, n, ctx.Err())
		}
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	// Read the body first: only then does net/http notice a client hanging
	// up and cancel r.Context(), which ends the latency wait.
	body, readErr := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))

	s.mu.Lock()
	s.stats.Requests++
	s.inFlight++
	s.stats.MaxInFlight = max(s.stats.MaxInFlight, s.inFlight)
	latency := s.latency
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()

	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	s.mu.Lock()
	now := s.now()
	f := s.failures
	s.failuresSeen++
	fail := s.failuresSeen <= f.First || (f.For > 0 && now.Sub(s.failuresFrom) < f.For)
	if fail {
		s.stats.Failed++
	}
	keys := s.keys
	maxSkew := s.maxSkew
	s.mu.Unlock()
	if fail {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		http.Error(w, "scheduled failure", f.Status)
		return
	}

	switch {
	case r.Method != http.MethodPost:
		s.reject(w, http.StatusMethodNotAllowed, "method "+r.Method)
		return
	case readErr != nil:
		s.reject(w, http.StatusBadRequest, "reading body: "+readErr.Error())
		return
	case len(body) > MaxBodyBytes:
		s.reject(w, http.StatusRequestEntityTooLarge, "body too large")
		return
	}

	var keyID, scheme string
	if keys != nil {
		var err error
		if keyID, scheme, err = s.verify(r, body, now, maxSkew); err != nil {
			s.reject(w, http.StatusUnauthorized, err.Error())
			return
		}
	}

	a := Activity{ID: activityID(body), Body: body, Path: r.URL.Path, KeyID: keyID, Scheme: scheme, RequestURI: r.RequestURI, Received: now}
	s.mu.Lock()
	switch scheme {
	case AcceptCavageName:
		s.stats.Cavage++
	case AcceptRFC9421Name:
		s.stats.RFC9421++
	}
	s.received = append(s.received, a)
	s.counts[a.ID]++
	s.stats.Accepted++
	if s.counts[a.ID] == 1 {
		s.stats.Unique++
	} else {
		s.stats.Duplicates++
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

func (s *Server) reject(w http.ResponseWriter, status int, reason string) {
	s.mu.Lock()
	s.stats.Rejected++
	s.lastReject = reason
	acceptSig := s.acceptSig
	s.mu.Unlock()
	if status == http.StatusUnauthorized && acceptSig != "" {
		w.Header().Set("Accept-Signature", acceptSig)
	}
	http.Error(w, reason, status)
}

// Names of the schemes in Activity.Scheme.
const (
	AcceptCavageName  = "cavage"
	AcceptRFC9421Name = "rfc9421"
)

// verify checks the request's signature in the scheme it uses, if the
// inbox accepts that scheme, and returns its keyId and scheme.
func (s *Server) verify(r *http.Request, body []byte, now time.Time, maxSkew time.Duration) (keyID, scheme string, err error) {
	s.mu.Lock()
	schemes := s.schemes
	s.mu.Unlock()
	lookup := func(id string) (crypto.PublicKey, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		k, ok := s.keys[id]
		if !ok {
			return nil, fmt.Errorf("unknown key")
		}
		return k, nil
	}
	if r.Header.Get("Signature-Input") != "" {
		if schemes&AcceptRFC9421 == 0 {
			return "", "", fmt.Errorf("RFC 9421 signatures are not accepted here")
		}
		opts := &httpsigverify.Options9421{}
		if maxSkew > 0 {
			opts.Now, opts.MaxSkew = now, maxSkew
		}
		p, err := httpsigverify.VerifyRFC9421(r, body, lookup, opts)
		if err != nil {
			return "", "", err
		}
		return p.KeyID, AcceptRFC9421Name, nil
	}
	if schemes&AcceptCavage == 0 {
		return "", "", fmt.Errorf("draft-cavage signatures are not accepted here")
	}
	opts := &httpsigverify.Options{}
	if maxSkew > 0 {
		opts.Now, opts.MaxSkew = now, maxSkew
	}
	p, err := httpsigverify.Verify(r, body, func(id string) (*rsa.PublicKey, error) {
		k, err := lookup(id)
		if err != nil {
			return nil, err
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("key %s is not RSA", id)
		}
		return rk, nil
	}, opts)
	if err != nil {
		return "", "", err
	}
	return p.KeyID, AcceptCavageName, nil
}

// activityID returns the "id" member of a JSON object, or a hash of body.
func activityID(body []byte) string {
	var v struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(body, &v) == nil && v.ID != "" {
		return v.ID
	}
	sum := sha256.Sum256(body)
	return "sha256:" + hex.EncodeToString(sum[:])
}

package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
)

// queueSettings is what every queue of a run, in this process or a child,
// is configured with.
type queueSettings struct {
	MaxInFlight int           `json:"max_inflight"`
	FixedLimit  bool          `json:"fixed_inflight"`
	GlobalCap   int           `json:"global_inflight"`
	Checkpoint  time.Duration `json:"checkpoint"`
	BackoffMin  time.Duration `json:"backoff_min"`
	WindowBytes int           `json:"window_bytes"`
	BackoffMax  time.Duration `json:"backoff_max"`
	MaxAttempts int           `json:"max_attempts"`
	LeaseTTL    time.Duration `json:"lease_ttl"`
	Sign        bool          `json:"sign"`
	SignScheme  string        `json:"sign_scheme"`
	KeyPEM      []byte        `json:"key_pem"`
	Verbose     bool          `json:"verbose"`
}

// settingsOf is the queue settings the flags of o ask for, signing with
// keyPEM when o.sign is set.
func settingsOf(o *options, keyPEM []byte) queueSettings {
	s := o.queueSettings()
	s.Sign, s.SignScheme, s.KeyPEM = o.sign, o.signScheme, keyPEM
	return s
}

// newKey makes the local actor's RSA-2048 key.
func newKey() (*rsa.PrivateKey, []byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	return key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), nil
}

// newSender builds the HTTP sender the queue and the bare loop share: the
// one queue.New would build (sender defaults, loopback allowed), signing
// with the actor's key when s.Sign is set, in s.SignScheme only, and with
// base's Resolver and MaxIdleConns (zero: the defaults). Idle connections
// per host are raised to the queue's in-flight maximum per domain when that
// is above the default, so that connections are reused rather than
// re-dialled.
func newSender(s queueSettings, base sender.HTTPConfig) (*sender.HTTP, error) {
	cfg := &sender.HTTPConfig{AllowLoopback: true, AllowHTTP: true, Resolver: base.Resolver, MaxIdleConns: base.MaxIdleConns}
	if m := orDefault(s.MaxInFlight, queue.MaxInFlightPerDomainDefault); m > sender.MaxIdleConnsPerHostDefault {
		cfg.MaxIdleConnsPerHost = m
	}
	if s.Sign {
		keys := &signer.StaticKeys{}
		if err := keys.AddPEM(actor, keyID, s.KeyPEM); err != nil {
			return nil, err
		}
		sig, err := signer.New(keys, nil)
		if err != nil {
			return nil, err
		}
		cfg.Signer = sig
		cfg.SignaturePolicy = sender.CavageOnly
		if signer.Scheme(s.SignScheme) == signer.RFC9421 {
			cfg.SignaturePolicy = sender.RFC9421Only
		}
	}
	return sender.NewHTTP(cfg)
}

// events counts the queue's retries and dead letters through its Observer,
// and why they happened.
type events struct {
	retries, deadLetters atomic.Int64

	mu      sync.Mutex
	reasons map[string]int64
}

func (e *events) Observe(_ context.Context, ev queue.Event) {
	switch ev.Kind {
	case queue.EventRetry:
		e.retries.Add(1)
	case queue.EventDeadLetter:
		e.deadLetters.Add(1)
	default:
		return
	}
	reason := ev.Reason
	if len(reason) > 200 {
		reason = reason[:200] + "…"
	}
	e.mu.Lock()
	if e.reasons == nil {
		e.reasons = map[string]int64{}
	}
	e.reasons[fmt.Sprintf("%s: %d %s", ev.Kind, ev.HTTPStatus, reason)]++
	e.mu.Unlock()
}

// topReasons returns the n most frequent reasons, with their counts.
func (e *events) topReasons(n int) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	keys := make([]string, 0, len(e.reasons))
	for k := range e.reasons {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return e.reasons[keys[i]] > e.reasons[keys[j]] })
	out := make([]string, 0, n)
	for _, k := range keys[:min(n, len(keys))] {
		out = append(out, fmt.Sprintf("%d× %s", e.reasons[k], k))
	}
	return out
}

// queueConfig is the configuration of every queue of the run: the queue's
// defaults except what the flags set.
func queueConfig(s queueSettings, resolver queue.Resolver, obs queue.Observer) *queue.Config {
	summary := time.Duration(-1)
	if s.Verbose {
		summary = 0
	}
	return &queue.Config{
		MaxInFlightPerDomain: s.MaxInFlight,
		FixedInFlight:        s.FixedLimit,
		MaxInFlight:          s.GlobalCap,
		CheckpointInterval:   s.Checkpoint,
		BackoffMin:           s.BackoffMin,
		WindowBytes:          s.WindowBytes,
		BackoffMax:           s.BackoffMax,
		MaxAttempts:          s.MaxAttempts,
		LeaseTTL:             s.LeaseTTL,
		AllowHTTP:            true, // the inboxes are plain http on loopback
		Resolver:             resolver,
		Observer:             obs,
		SummaryInterval:      summary,
		Logger:               newLogger(s.Verbose),
	}
}

// stopQueue stops q gracefully, allowing a minute even when ctx has ended
// (a run stopped by its timeout still stops its queues).
func stopQueue(ctx context.Context, q *queue.Queue) error {
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	return q.Stop(stopCtx)
}

// newLogger logs errors to stderr, and with verbose also the queue's
// warnings and federation summaries.
func newLogger(verbose bool) *slog.Logger {
	level := slog.LevelError
	if verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// sharedInboxes maps each domain of in to its shared inbox.
func sharedInboxes(in *inboxes) map[string]string {
	m := make(map[string]string, len(in.domains))
	for i, d := range in.domains {
		m[d] = in.sharedInbox(i)
	}
	return m
}

// sharedInboxResolver resolves the followers audience to the shared inbox
// of every domain in byDomain.
func sharedInboxResolver(byDomain map[string]string) queue.Resolver {
	inboxes := make([]string, 0, len(byDomain))
	for _, inbox := range byDomain {
		inboxes = append(inboxes, inbox)
	}
	sort.Strings(inboxes)
	return queue.ResolverFunc(func(_ context.Context, audience string) ([]string, error) {
		if audience != followers {
			return nil, fmt.Errorf("unknown audience %q", audience)
		}
		return inboxes, nil
	})
}

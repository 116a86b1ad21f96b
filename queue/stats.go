package queue

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/apqueue/apqueue/store"
)

// DomainStats describes one remote domain.
type DomainStats struct {
	Domain      string             `json:"domain"`
	SharedInbox string             `json:"shared_inbox,omitempty"`
	Status      store.DomainStatus `json:"status"`
	// SignatureScheme is the HTTP signature scheme the domain accepted
	// ("cavage" or "rfc9421"), "" while unknown.
	SignatureScheme string `json:"signature_scheme"`
	// Cursor: every activity at or below it is settled for the domain.
	Cursor int64 `json:"cursor"`
	// Owner is the process whose lease covers the domain ("" when none).
	Owner string `json:"owner"`
	// Local reports whether this process works the domain; the fields
	// below up to Latency are live only then (otherwise zero or as saved).
	Local bool `json:"local"`
	// Pending counts deliveries read and addressed to the domain, not yet
	// settled.
	Pending int `json:"pending"`
	// Unread counts log IDs after the domain's read position, up to the
	// head, not yet examined (some may be addressed elsewhere); zero when
	// the domain is caught up.
	Unread int64 `json:"unread"`
	// Scanned is the domain's read position: every activity at or below it
	// addressed to the domain was read (local domains only).
	Scanned int64 `json:"scanned"`
	// Blocked says why the domain cannot read or resolve its activities
	// (the log cannot be read, the Resolver fails); it is retried with
	// backoff. Empty when nothing blocks it.
	Blocked string `json:"blocked,omitempty"`
	// CaughtUp says the domain has read everything addressed to it up to
	// the head of this process's window (local domains only).
	CaughtUp bool `json:"caught_up"`
	// OldestPending is when the oldest unsettled activity was enqueued (zero
	// when none): the domain's lag in time.
	OldestPending time.Time `json:"oldest_pending"`
	InFlight      int       `json:"in_flight"`
	FailCount     int       `json:"fail_count"`
	FailingSince  time.Time `json:"failing_since"`
	NextAttemptAt time.Time `json:"next_attempt_at"`
	LastStatus    int       `json:"last_status"`
	LastError     string    `json:"last_error"`
	LastSuccessAt time.Time `json:"last_success_at"`
	// Counters since this process took the domain.
	Delivered    int64 `json:"delivered"`
	Retried      int64 `json:"retried"`
	DeadLettered int64 `json:"dead_lettered"`
	// LatencyP50 and LatencyP90 are over the last deliveries.
	LatencyP50 time.Duration `json:"latency_p50_ns"`
	LatencyP90 time.Duration `json:"latency_p90_ns"`
	// InFlightLimit is how many requests the domain may have in flight
	// now, as adapted to its answers (one at a time while it fails, as
	// FailCount shows), for local domains; InFlightMax is the most it may
	// reach
	// (Config.MaxInFlightPerDomain or Config.DomainLimitFunc, within
	// Config.MaxInFlight).
	InFlightLimit int `json:"in_flight_limit"`
	InFlightMax   int `json:"in_flight_max"`
	// LimitChanges are the last changes of InFlightLimit, oldest first.
	LimitChanges []LimitChange `json:"limit_changes,omitempty"`
	// BestLatency is the domain's lowest latency over its recent
	// deliveries, which the limit judges later answers against.
	BestLatency time.Duration `json:"best_latency_ns"`
}

// Lag returns how long the oldest unsettled activity has waited, at now.
func (d DomainStats) Lag(now time.Time) time.Duration {
	if d.OldestPending.IsZero() {
		return 0
	}
	return now.Sub(d.OldestPending)
}

// Stats is a snapshot of the queue.
type Stats struct {
	// Head is the highest activity ID in the log.
	Head int64 `json:"head"`
	// Owner is this process's lease owner ID.
	Owner string `json:"owner"`
	// Domains are sorted by name.
	Domains []DomainStats `json:"domains"`
	// Totals over Domains.
	Delivered    int64 `json:"delivered"`
	Retried      int64 `json:"retried"`
	DeadLettered int64 `json:"dead_lettered"`
	Pending      int   `json:"pending"`
	InFlight     int   `json:"in_flight"`
	Failing      int   // domains with failures since their last success
	Dead         int   `json:"dead"`
	Paused       int   `json:"paused"`
	Suspended    int   `json:"suspended"`
	// MaxInFlight is the cap on requests in flight across all domains
	// (Config.MaxInFlight), 0 when there is none.
	MaxInFlight int `json:"max_in_flight"`
	// ObserverDropped counts the events this queue dropped because the
	// Observer did not keep up (see Config.ObserverBuffer), and
	// ObserverPanics the calls of Observe that panicked, since New.
	ObserverDropped int64 `json:"observer_dropped"`
	ObserverPanics  int64 `json:"observer_panics"`
	// CPUSaturated says this process's goroutines waited for the CPU over
	// the last fraction of a second: the adaptive in-flight limits then
	// grow only on answers as fast as each domain's best, and go back to
	// InitialInFlightLimit on slower ones (their changes say "cpu busy").
	// Always false with Config.FixedInFlight.
	CPUSaturated bool `json:"cpu_saturated"`
}

// Stats returns the state of every known domain: live figures for the
// domains this process works, the saved state for the others.
func (q *Queue) Stats(ctx context.Context) (Stats, error) {
	head, err := q.store.Head(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("queue: stats: %w", err)
	}
	states, err := q.store.Domains(ctx, nil)
	if err != nil {
		return Stats{}, fmt.Errorf("queue: stats: %w", err)
	}
	local := make(map[string]*worker)
	for _, w := range q.workerList() {
		local[w.domain] = w
	}
	now := time.Now()
	out := Stats{Head: head, Owner: q.cfg.OwnerID, MaxInFlight: max(q.cfg.MaxInFlight, 0), Domains: make([]DomainStats, 0, len(states))}
	for _, s := range states {
		if w, ok := local[s.Domain]; ok {
			out.Domains = append(out.Domains, w.stats(head))
			delete(local, s.Domain)
			continue
		}
		owner := s.Owner
		if !now.Before(s.LeaseExpiresAt) {
			owner = ""
		}
		out.Domains = append(out.Domains, DomainStats{
			Domain: s.Domain, SharedInbox: s.SharedInbox, Status: s.Status, SignatureScheme: s.SignatureScheme, Cursor: s.Cursor, Owner: owner,
			Unread: max(head-s.Cursor, 0), FailCount: s.FailCount, FailingSince: s.FailingSince,
			NextAttemptAt: s.NextAttemptAt, LastStatus: s.LastStatus, LastError: s.LastError, LastSuccessAt: s.LastSuccessAt,
		})
	}
	for _, w := range local { // leased since the store read
		out.Domains = append(out.Domains, w.stats(head))
	}
	sort.Slice(out.Domains, func(i, j int) bool { return out.Domains[i].Domain < out.Domains[j].Domain })
	if q.events != nil {
		out.ObserverDropped, out.ObserverPanics = q.events.dropped.Load(), q.events.panics.Load()
	}
	out.CPUSaturated = !q.cfg.FixedInFlight && q.cpuSaturated()
	for _, d := range out.Domains {
		out.Delivered += d.Delivered
		out.Retried += d.Retried
		out.DeadLettered += d.DeadLettered
		out.Pending += d.Pending
		out.InFlight += d.InFlight
		switch {
		case d.Status == store.StatusDead:
			out.Dead++
		case d.Status == store.StatusPaused:
			out.Paused++
		case d.Status == store.StatusSuspended:
			out.Suspended++
		case d.FailCount > 0:
			out.Failing++
		}
	}
	return out, nil
}

// stats returns the live figures of a worker's domain, as its run
// goroutine last published them.
func (w *worker) stats(head int64) DomainStats {
	s := *w.view.Load()
	if !s.CaughtUp {
		// A caught-up domain has read everything addressed to it; the IDs
		// above its read position address other domains.
		s.Unread = max(head-s.Scanned, 0)
	}
	return s
}

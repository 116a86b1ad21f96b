package queue

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/store"
)

// Drain waits until every activity enqueued before the call (every ID up
// to the log's head when Drain reads it) is settled, delivered or
// dead-lettered, on every domain that will settle it: for tests, batch
// jobs and a planned shutdown, instead of polling cursors.
//
// It waits for active domains, including those in backoff, whose
// retries end in a delivery or a dead letter, and for paused domains,
// which settle once resumed: while one stays paused, Drain returns when
// ctx ends, with an error that wraps ctx.Err() and names the domains not
// settled. It skips dead domains, which only a revival probe or
// retention's fast-forward settles, suspended domains, to which nothing is
// delivered, and any other status in which nothing is delivered; a domain
// that becomes dead or suspended while Drain waits is skipped from then
// on.
//
// Settled means saved: when Drain returns, the store's cursors and dead
// letters say so. Drain works from any process sharing the store, started
// or not, and needs some process to deliver. The domains this process
// works are watched in memory and end the wait as soon as they are
// settled and saved (Drain asks for an early checkpoint); the others
// are read from the store every Config.CheckpointInterval, and are seen
// settled once their owner saved them: at its next checkpoint, or for a
// domain that had nothing to deliver at its next lease renewal (every
// third of Config.LeaseTTL).
func (q *Queue) Drain(ctx context.Context) error {
	target, err := q.store.Head(ctx)
	if err != nil {
		return fmt.Errorf("queue: drain: %w", err)
	}
	q.quiet.watchers.Add(1)
	defer q.quiet.watchers.Add(-1)
	states, err := q.store.Domains(ctx, nil)
	if err != nil {
		return fmt.Errorf("queue: drain: %w", err)
	}
	// left holds the domains still to settle, with their last known status.
	left := make(map[string]store.DomainStatus)
	for _, s := range states {
		if drainWaitsFor(s.Status) && s.Cursor < target {
			left[s.Domain] = s.Status
		}
	}
	poll := time.NewTicker(q.cfg.CheckpointInterval)
	defer poll.Stop()
	readStore := false
	for {
		changed := q.quiet.changed()
		remote := q.settleLocal(left, target)
		if readStore && len(remote) > 0 {
			states, err := q.store.Domains(ctx, remote)
			if err != nil {
				return fmt.Errorf("queue: drain: %w", err)
			}
			for _, s := range states {
				if !drainWaitsFor(s.Status) || s.Cursor >= target {
					delete(left, s.Domain)
				} else {
					left[s.Domain] = s.Status
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		readStore = false
		select {
		case <-ctx.Done():
			return drainError(left, target, ctx.Err())
		case <-changed:
		case <-poll.C:
			readStore = true
		}
	}
}

// drainWaitsFor reports whether Drain waits for a domain in status s.
func drainWaitsFor(s store.DomainStatus) bool {
	return s == store.StatusActive || s == store.StatusPaused
}

// settleLocal removes from left the domains this process works that have
// settled everything up to target and saved it (or that Drain no longer
// waits for), asks for an early checkpoint when some wait only for it, and
// returns the domains of left that this process does not work.
func (q *Queue) settleLocal(left map[string]store.DomainStatus, target int64) []string {
	var remote []string
	saving := false
	local := make(map[string]*worker)
	q.mu.Lock()
	for dom := range left {
		if w := q.workers[dom]; w != nil {
			local[dom] = w
		} else {
			remote = append(remote, dom)
		}
	}
	q.mu.Unlock()
	for dom, w := range local {
		v := w.view.Load()
		left[dom] = v.Status
		through, idle := q.window.settledThrough(w)
		if drainWaitsFor(v.Status) && v.Cursor < target && (!idle || through < target) {
			continue
		}
		// Settled in memory: done once saved, so that what the store says
		// after Drain (cursors, dead letters) is true.
		if !q.checkpoints.unsaved(dom) {
			delete(left, dom)
		} else {
			saving = true
		}
	}
	if saving {
		q.checkpoints.kick()
	}
	return remote
}

// drainError says which domains did not settle, a few by name.
func drainError(left map[string]store.DomainStatus, target int64, err error) error {
	names := make([]string, 0, len(left))
	for dom := range left {
		names = append(names, dom)
	}
	sort.Strings(names)
	const shown = 5
	parts := make([]string, 0, shown)
	for _, dom := range names[:min(len(names), shown)] {
		parts = append(parts, fmt.Sprintf("%s (%s)", dom, left[dom]))
	}
	more := ""
	if len(names) > shown {
		more = fmt.Sprintf(" and %d more", len(names)-shown)
	}
	return fmt.Errorf("queue: drain: %d domains have not settled activity %d: %s%s: %w", len(names), target, strings.Join(parts, ", "), more, err)
}

// quietSignal tells Drain calls that a local domain's cursor or status
// changed, or the window moved on. It costs one atomic load while no Drain
// waits.
type quietSignal struct {
	watchers atomic.Int32
	mu       sync.Mutex
	ch       chan struct{}
}

// changed returns a channel closed at the next notify.
func (s *quietSignal) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// notify wakes every Drain waiting on changed.
func (s *quietSignal) notify() {
	if s.watchers.Load() == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

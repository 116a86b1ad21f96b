package queue

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/apqueue/apqueue/internal/clock"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/store"
)

// worker delivers the activities of one domain while this process holds the
// domain's lease. Its run goroutine owns the pending deliveries; the fields
// under mu are shared with the checkpointer, the lease manager and Stats.
type worker struct {
	q      *Queue
	domain string

	ctx        context.Context // ends when the lease is lost or the queue stops hard
	cancel     context.CancelFunc
	sendCtx    context.Context // in-flight requests; cancelled when Stop times out
	sendCancel context.CancelFunc
	stopping   chan struct{} // closed: dispatch nothing more, finish in-flight, exit
	stopOnce   sync.Once
	done       chan struct{}
	nudge      chan struct{} // re-evaluate now (lease renewed, admin change)
	results    chan result

	// Owned by the run goroutine.
	scanned    int64 // every activity at or below this was read for the domain
	pending    []*delivery
	inflight   int
	moved      <-chan struct{} // closed when the window has more; nil when not caught up
	fillRetry  time.Time       // earliest time to read the log again after an error
	fillErrors int

	mu           sync.Mutex
	state        store.DomainState
	dirty        bool
	settledSince int
	deadLetters  []store.DeadLetter
	leaseUntil   time.Time   // local time the lease is known to hold until
	leaseTimer   *time.Timer // drops the worker when leaseUntil passes unrenewed
	counts       counts
	latency      latencyRing
	view         workerView
	skipTo       int64 // move past this ID (retention, admin skip); 0: none
	reload       bool  // re-read the saved state: an admin changed it
	retryNow     bool  // an admin cleared the backoff: pending deliveries are due now
}

// workerView is what Stats may read of the run goroutine's own fields,
// published under mu after every step.
type workerView struct {
	pending  int
	oldest   time.Time
	inFlight int
	scanned  int64
}

// counts are a domain's delivery counters since this process took it.
type counts struct {
	Delivered    int64
	Retried      int64
	DeadLettered int64
}

type result struct {
	d   *delivery
	res sender.Result
}

func newWorker(q *Queue, parent context.Context, st store.DomainState, leaseUntil time.Time) *worker {
	w := &worker{
		q:          q,
		domain:     st.Domain,
		stopping:   make(chan struct{}),
		done:       make(chan struct{}),
		nudge:      make(chan struct{}, 1),
		results:    make(chan result, q.cfg.MaxInFlightPerDomain),
		scanned:    st.Cursor,
		state:      st,
		leaseUntil: leaseUntil,
	}
	w.ctx, w.cancel = context.WithCancel(parent)
	w.sendCtx, w.sendCancel = context.WithCancel(w.ctx)
	return w
}

func (w *worker) clock() clock.Clock { return w.q.cfg.clock }

// poke wakes the run loop without blocking.
func (w *worker) poke() {
	select {
	case w.nudge <- struct{}{}:
	default:
	}
}

// stop asks the worker to finish its in-flight requests and exit.
func (w *worker) stop() { w.stopOnce.Do(func() { close(w.stopping) }) }

func (w *worker) isStopping() bool {
	select {
	case <-w.stopping:
		return true
	default:
		return false
	}
}

// run is the worker's loop: read, dispatch, collect results, advance the
// cursor, wait.
func (w *worker) run() {
	defer close(w.done)
	defer w.cancel()
	defer func() {
		if w.leaseTimer != nil {
			w.leaseTimer.Stop()
		}
	}()
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		// A worker whose lease is lost or whose queue stops hard only waits
		// for its in-flight requests, like a stopping one.
		stopping := w.isStopping() || w.ctx.Err() != nil
		if stopping {
			if w.inflight == 0 {
				w.advanceCursor()
				return
			}
		} else {
			w.reloadIfWanted()
			w.applySkip()
			w.advanceCursor() // drop what settled, so fill sees the room it has
			w.fill()
			w.dispatch()
		}
		w.advanceCursor()

		if timer != nil {
			timer.Stop()
			timer = nil
		}
		var timerC <-chan time.Time
		if !stopping {
			if at, ok := w.nextWake(); ok {
				timer = w.clock().NewTimer(at.Sub(w.clock().Now()))
				timerC = timer.C()
			}
		}
		var moved <-chan struct{}
		if !stopping {
			moved = w.moved
		}
		var stopC <-chan struct{}
		if !stopping {
			stopC = w.stopping
		}
		var ctxDone <-chan struct{}
		if w.ctx.Err() == nil {
			ctxDone = w.ctx.Done()
		}
		select {
		case r := <-w.results:
			w.handle(r)
		case <-moved:
		case <-timerC:
		case <-w.nudge:
		case <-stopC:
		case <-ctxDone:
		}
	}
}

// ahead is how many deliveries the worker may hold pending. Settled
// deliveries count until the cursor passes them: they would be sent again
// after a crash, so how far the worker runs ahead of its cursor is bounded
// by the checkpoint window as well as by the read batch.
func (w *worker) ahead() int {
	return min(w.q.cfg.ReadBatch, w.q.cfg.CheckpointDeliveries)
}

// fill reads activities after the scanned position and turns those
// addressed to the domain into pending deliveries.
func (w *worker) fill() {
	w.moved = nil
	if w.clock().Now().Before(w.fillRetry) {
		return
	}
	// Refill only once half the room is free, so that a domain catching up
	// from the store reads in batches rather than once per delivery.
	if len(w.pending) > 0 && w.ahead()-len(w.pending) < (w.ahead()+1)/2 {
		return
	}
	for {
		room := w.ahead() - len(w.pending)
		if room <= 0 {
			return
		}
		entries, scanned, moved, err := w.q.window.read(w.ctx, w.scanned, room)
		if err != nil {
			w.fillFailed("reading the activity log", err)
			return
		}
		if moved != nil {
			w.moved = moved
			return
		}
		for _, e := range entries {
			inboxes, err := w.targets(e)
			if err != nil {
				w.fillFailed("resolving audiences", err)
				return
			}
			for _, inbox := range inboxes {
				w.pending = append(w.pending, &delivery{entry: e, inbox: inbox, shared: inbox == w.sharedInbox()})
			}
			w.scanned = e.act.ID
		}
		w.scanned = max(w.scanned, scanned)
		w.fillErrors = 0
	}
}

func (w *worker) fillFailed(what string, err error) {
	if w.ctx.Err() != nil {
		return
	}
	w.fillErrors++
	delay := w.q.backoff.Delay(w.fillErrors, 0)
	w.fillRetry = w.clock().Now().Add(delay)
	w.q.logger.ErrorContext(w.ctx, "apqueue: "+what+" failed", slog.String("domain", w.domain), slog.Any("error", err), slog.Duration("retry_in", delay))
}

func (w *worker) sharedInbox() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state.SharedInbox
}

// targets returns the inboxes of the domain that e is addressed to, with the
// domain's shared inbox preferred and no inbox twice.
func (w *worker) targets(e *entry) ([]string, error) {
	inboxes := e.byDomain[w.domain]
	if len(e.act.Audiences) > 0 && w.q.resolver == nil {
		// Enqueued by a process that has a Resolver; this one cannot tell
		// who the audiences are. Wait, loudly, rather than skip them.
		return nil, errNoResolverHere
	}
	for _, aud := range e.act.Audiences {
		got, err := w.q.resolver.inboxes(w.ctx, aud, w.domain, w.checkResolved)
		if err != nil {
			return nil, err
		}
		inboxes = append(inboxes[:len(inboxes):len(inboxes)], got...)
	}
	shared := w.sharedInbox()
	if e.act.AllDomains {
		if shared == "" && len(inboxes) == 0 {
			// Nowhere to send it: record it rather than drop it.
			w.settleUndeliverable(e, "addressed to all domains, but no shared inbox is known for this domain")
			return nil, nil
		}
		if shared != "" {
			inboxes = append(inboxes[:len(inboxes):len(inboxes)], shared)
		}
	}
	if len(inboxes) == 0 {
		return nil, nil
	}
	if shared != "" {
		return []string{shared}, nil
	}
	return dedupe(inboxes), nil
}

// checkResolved validates an inbox from the Resolver for this domain.
func (w *worker) checkResolved(raw string) (string, bool) {
	inbox, dom, err := w.q.checkInbox(raw)
	if err != nil || dom != w.domain {
		w.q.logger.WarnContext(w.ctx, "apqueue: resolver returned an unusable inbox", slog.String("domain", w.domain), slog.String("inbox", raw), slog.Any("error", err))
		return "", false
	}
	return inbox, true
}

// settleUndeliverable records a dead letter for an activity that has no
// inbox on this domain.
func (w *worker) settleUndeliverable(e *entry, reason string) {
	d := &delivery{entry: e}
	w.mu.Lock()
	w.deadLetters = append(w.deadLetters, d.deadLetter(w.domain, 0, reason))
	w.counts.DeadLettered++
	w.dirty = true
	w.mu.Unlock()
	w.q.observe(Event{Kind: EventDeadLetter, Domain: w.domain, ActivityID: e.act.ID, Reason: reason})
}

var errNoResolverHere = errors.New("an activity has audiences, but this queue has no Config.Resolver: configure the same Resolver in every process")

func dedupe(in []string) []string {
	if len(in) < 2 {
		return in
	}
	seen := make(map[string]bool, len(in))
	out := in[:0:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// advanceCursor drops the settled prefix of the pending deliveries and moves
// the cursor to just below the first unsettled one: only over contiguous
// settled IDs.
func (w *worker) advanceCursor() {
	i := 0
	for i < len(w.pending) && w.pending[i].settled {
		i++
	}
	if i > 0 {
		clear(w.pending[:i])
		w.pending = w.pending[i:]
		if len(w.pending) == 0 {
			w.pending = nil
		}
	}
	cursor := w.scanned
	view := workerView{inFlight: w.inflight, scanned: w.scanned}
	if len(w.pending) > 0 {
		cursor = min(cursor, w.pending[0].entry.act.ID-1)
		view.oldest = w.pending[0].entry.act.EnqueuedAt
		for _, d := range w.pending {
			if !d.settled {
				view.pending++
			}
		}
	}
	w.mu.Lock()
	w.view = view
	if cursor > w.state.Cursor {
		w.state.Cursor = cursor
		w.dirty = true
	}
	full := w.settledSince >= w.q.cfg.CheckpointDeliveries
	w.mu.Unlock()
	if full {
		w.q.checkpoints.kick() // bound the re-sends after a crash
	}
}

// nextWake returns when the worker must next look at the time: the end of a
// backoff, a delivery's retry time, a read retry.
func (w *worker) nextWake() (time.Time, bool) {
	var at time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	now := w.clock().Now()
	if w.fillRetry.After(now) {
		earliest(w.fillRetry)
	}
	w.mu.Lock()
	next, status := w.state.NextAttemptAt, w.state.Status
	w.mu.Unlock()
	if status == store.StatusPaused {
		return at, !at.IsZero()
	}
	if next.After(now) {
		earliest(next)
	} else {
		for _, d := range w.pending {
			if !d.settled && !d.inFlight && d.nextAttempt.After(now) {
				earliest(d.nextAttempt)
			}
		}
	}
	return at, !at.IsZero()
}

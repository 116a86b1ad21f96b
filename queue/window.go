package queue

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/apqueue/apqueue/store"
)

// window is the per-process shared view of the newest part of the activity
// log. One read of the store serves every domain of this process; the
// entries are indexed by the domains they address, and a refresh wakes only
// the workers of those domains (all of them only for an activity addressed
// to all domains), so an activity costs in proportion to its recipients,
// not to the domains this process knows. A domain further behind than the
// window reads through the shared catch-up blocks. Memory is bounded by the
// window's size in entries and, together with the catch-up blocks, in
// bytes, not by the backlog.
type window struct {
	store    store.Store
	batch    int
	size     int // entries kept at most
	maxBytes int // approximate bytes kept at most, catch-up blocks included
	logger   *slog.Logger
	timeout  time.Duration // bounds each read (Config.StoreTimeout); 0: none
	catchUp  *catchUp
	// arrived, if set, is called with the activities each refresh adds.
	arrived func([]store.Activity)
	// moved, if set, is called once they are in the window.
	moved func()

	mu    sync.Mutex
	idx   logIndex // every activity in (base, head]
	bytes int      // sum of the entries' footprints
	base  int64
	head  int64
	// waiters are the workers that have read everything addressed to their
	// domain up to head; the next activity that addresses the domain wakes
	// its worker and removes it from here.
	waiters map[string]waiter
	kick    chan struct{} // a refresh is wanted
}

// waiter is a caught-up worker.
type waiter struct {
	w *worker
	// idle says the worker had nothing pending when it registered, so the
	// domain has settled everything addressed to it up to head.
	idle bool
}

// wake tells a caught-up worker that activity id addresses its domain, and
// that nothing before it does: the worker reads on from there, not from
// where it stopped, however much of the log went by meanwhile.
func (wt waiter) wake(id int64) {
	for {
		old := wt.w.emptyThrough.Load()
		if id-1 <= old || wt.w.emptyThrough.CompareAndSwap(old, id-1) {
			break
		}
	}
	wt.w.poke()
}

// newWindow returns a window on st's log; timeout bounds each of its reads
// and its catch-up's (none when zero).
func newWindow(st store.Store, batch, size, maxBytes int, timeout time.Duration, logger *slog.Logger) *window {
	w := &window{
		store: st, batch: batch, size: size, maxBytes: maxBytes, timeout: timeout, logger: logger,
		catchUp: newCatchUp(st, batch, maxBytes/2),
		idx:     newLogIndex(), waiters: make(map[string]waiter), kick: make(chan struct{}, 1),
	}
	w.catchUp.timeout = timeout
	return w
}

// init places the window at the log's current head.
func (w *window) init(ctx context.Context) error {
	head, err := w.store.Head(ctx)
	if err != nil {
		return fmt.Errorf("reading log head: %w", err)
	}
	w.mu.Lock()
	// A restarted queue forgets what it held: activities appended while it
	// was stopped are not in it.
	w.idx = newLogIndex()
	w.bytes = 0
	w.base, w.head = head, head
	clear(w.waiters)
	w.mu.Unlock()
	w.catchUp.reset()
	return nil
}

// wake asks for a refresh without blocking; wake-ups coalesce.
func (w *window) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// A failed refresh is retried after readRetryMin, doubling up to
// readRetryMax (or the poll interval, if shorter), until one succeeds: a
// read that fails (a connection ended with the database's restart) must
// not leave the activities it would have read waiting for the next
// wake-up, which may never come, or for the poll interval.
const (
	readRetryMin = 20 * time.Millisecond
	readRetryMax = 5 * time.Second
)

// run refreshes the window whenever woken and at least every poll interval,
// until ctx ends.
func (w *window) run(ctx context.Context, poll time.Duration) {
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	retry := time.NewTimer(0)
	retry.Stop()
	defer retry.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-ticker.C:
		case <-retry.C:
		}
		if err := w.refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			wait := min(readRetryMin<<min(failures-1, 16), readRetryMax, poll)
			w.logger.WarnContext(ctx, "apqueue: reading the activity log failed; retrying",
				slog.Any("error", err), slog.Int("attempt", failures), slog.Duration("retry_in", wait))
			retry.Reset(wait)
			continue
		}
		failures = 0
		retry.Stop()
	}
}

// refresh reads every activity after the head into the window.
func (w *window) refresh(ctx context.Context) error {
	for {
		w.mu.Lock()
		head := w.head
		w.mu.Unlock()
		callCtx, cancel := storeCall(ctx, w.timeout)
		acts, err := w.store.Activities(callCtx, head, w.batch)
		cancel()
		if err != nil {
			return err
		}
		if len(acts) == 0 {
			return nil
		}
		if w.arrived != nil {
			// Before the workers can see them: a new domain's lease round
			// starts at once.
			w.arrived(acts)
		}
		w.append(acts)
		if w.moved != nil {
			w.moved()
		}
		if len(acts) < w.batch {
			return nil
		}
	}
}

func (w *window) append(acts []store.Activity) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range acts {
		if a.ID <= w.head {
			continue
		}
		e := newEntry(a)
		w.idx.push(e)
		w.bytes += e.footprint()
		w.head = a.ID
		if a.AllDomains {
			for _, wt := range w.waiters {
				wt.wake(a.ID)
			}
			clear(w.waiters)
			continue
		}
		for _, d := range a.Domains {
			if wt, ok := w.waiters[d]; ok {
				wt.wake(a.ID)
				delete(w.waiters, d)
			}
		}
	}
	// Drop the oldest entries beyond either bound (keeping the newest one
	// however large); domains that still need them read the catch-up
	// blocks.
	budget := w.maxBytes - w.catchUp.size()
	over := 0
	for over < len(w.idx.entries)-1 && (len(w.idx.entries)-over > w.size || w.bytes > budget) {
		w.bytes -= w.idx.entries[over].footprint()
		over++
	}
	if over > 0 {
		w.base = max(w.base, w.idx.entries[over-1].act.ID)
		w.idx.popFront(over)
	}
}

// logRead is the answer to a worker's read of the log.
type logRead struct {
	// entries are the activities addressed to the domain after the ID the
	// read started from, in ID order.
	entries []*entry
	// scanned is the ID up to which the log has been scanned for the
	// domain: every activity at or below it that addresses the domain was
	// returned or is at or below the ID the read started from.
	scanned int64
	// caughtUp says there is nothing more up to the window's head: the
	// worker is registered to be woken by the next activity for its domain.
	caughtUp bool
	// wait says the domain is behind the window and the catch-up has no
	// room yet for the block it needs: the worker is poked when there may
	// be, and reads again at retryAt at the latest, if that is set.
	wait    bool
	retryAt time.Time
}

// read returns up to limit activities addressed to wk's domain after the
// given ID (see logRead). When there is nothing more up to the head, it
// registers wk to be woken by the next activity for its domain; idle says
// wk has nothing pending (see settledThrough). It runs on wk's goroutine,
// and keeps wk.catchingUp, which says whether wk reads behind the window.
func (w *window) read(ctx context.Context, wk *worker, after int64, limit int, idle bool) (logRead, error) {
	dom := wk.domain
	w.mu.Lock()
	if wt, ok := w.waiters[dom]; ok && wt.w == wk {
		delete(w.waiters, dom)
	}
	if after >= w.base {
		var res logRead
		res.entries = w.idx.addressed(dom, after, limit)
		if len(res.entries) == limit {
			res.scanned = res.entries[limit-1].act.ID
		} else {
			res.scanned = max(w.head, after)
			if len(res.entries) == 0 {
				w.waiters[dom] = waiter{w: wk, idle: idle}
				res.caughtUp = true
			}
		}
		w.mu.Unlock()
		if wk.catchingUp {
			wk.catchingUp = false
			w.catchUp.leave(wk)
		}
		return res, nil
	}
	base := w.base
	w.mu.Unlock()

	// Behind the window: the catch-up's blocks serve every domain behind
	// in the same part of the log with one store read.
	wk.catchingUp = true
	res, err := w.catchUp.read(ctx, wk, after, limit, base)
	if err != nil {
		return logRead{scanned: after}, fmt.Errorf("reading activities after %d: %w", after, err)
	}
	return res, nil
}

// join enters a new worker in the catch-up's sweep when its cursor is
// behind the window, before it runs: see catchUp.
func (w *window) join(wk *worker) {
	w.mu.Lock()
	behind := wk.scanned < w.base
	w.mu.Unlock()
	if behind {
		wk.catchingUp = true
		w.catchUp.join(wk, wk.scanned)
	}
}

// settledThrough returns the head of the window when the worker of dom
// waits in it with nothing pending: everything addressed to dom up to there
// is settled, so its cursor may follow the log (Lease.SettledThrough).
func (w *window) settledThrough(wk *worker) (int64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wt, ok := w.waiters[wk.domain]
	if !ok || wt.w != wk || !wt.idle {
		return 0, false
	}
	return w.head, true
}

// forget removes an exiting worker from the waiters and the catch-up.
func (w *window) forget(wk *worker) {
	w.mu.Lock()
	if wt, ok := w.waiters[wk.domain]; ok && wt.w == wk {
		delete(w.waiters, wk.domain)
	}
	w.mu.Unlock()
	w.catchUp.leave(wk)
}

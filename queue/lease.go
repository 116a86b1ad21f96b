package queue

import (
	"context"
	"log/slog"
	"time"

	"github.com/apqueue/apqueue/store"
)

// leaseKeeper renews the leases of this process's domains, takes its fair
// share of the domains that nobody holds, and gives back what exceeds that
// share, so that processes sharing a store split the domains among
// themselves without configuration.
type leaseKeeper struct {
	q     *Queue
	wants chan struct{}
	// liveUntil is when the store stops counting this process as a live
	// owner, absent further lease calls. Used by the run goroutine only.
	liveUntil time.Time
	// kept is what the store knows of this process's leases when it
	// implements store.LeaseKeeper (see keep). Used by the run goroutine
	// only.
	kept keptLeases
}

func newLeaseKeeper(q *Queue) *leaseKeeper {
	return &leaseKeeper{q: q, wants: make(chan struct{}, 1)}
}

// kick asks for an acquisition round soon (a new domain was enqueued).
func (l *leaseKeeper) kick() {
	select {
	case l.wants <- struct{}{}:
	default:
	}
}

func (l *leaseKeeper) run(ctx context.Context) {
	interval := l.q.cfg.LeaseTTL / 3
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	l.kept = keptLeases{}
	defer l.kept.stop()
	// renewDue is set by the ticker and cleared by a round that succeeds:
	// a round that failed is tried again soon, renewal included, and a
	// round for a new domain renews too when the last renewal failed.
	renewDue := true
	failures := 0
	for {
		var retry <-chan time.Time
		if err := l.round(ctx, renewDue); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			delay := leaseRetryDelay(failures, interval)
			l.q.logger.WarnContext(ctx, "apqueue: lease round failed, will retry", slog.Any("error", err), slog.Duration("retry_in", delay))
			if delay < interval { // else the ticker's next round is the retry
				retry = time.After(delay)
			}
		} else {
			renewDue, failures = false, 0
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			renewDue = true
		case <-retry:
		case <-l.wants:
			// A new domain: take it now; renewing every held lease can
			// wait for the ticker, so that new domains do not make
			// renewals cost more.
		}
	}
}

// Retries of a failed lease round: leaseRetryMin after the first failure,
// doubling, within the renewal interval, so that a failure the next call
// would not meet costs a few milliseconds of the lease, not a third of it.
const leaseRetryMin = 20 * time.Millisecond

// leaseRetryDelay is the wait after the failures-th failed round in a row.
func leaseRetryDelay(failures int, interval time.Duration) time.Duration {
	d := leaseRetryMin << min(failures-1, 16)
	return min(d, interval)
}

// round renews held leases (when renew is set), then acquires or releases
// toward a fair share.
func (l *leaseKeeper) round(ctx context.Context, renew bool) error {
	q := l.q
	ttl := q.cfg.LeaseTTL
	workers := q.workerList()
	if renew {
		var err error
		k, keeper := q.store.(store.LeaseKeeper)
		switch {
		case keeper && (len(workers) > 0 || l.kept.followers > 0):
			// With no worker left, leases may still follow the process in
			// the store (its workers ended when renewals failed): a store
			// that renews them with the process's other calls, as the
			// PostgreSQL store's heartbeat does, would hold them for it
			// for as long as it lives, and nobody would work them. The
			// keep lets them go.
			err = l.keep(ctx, k, workers, true)
		case !keeper && len(workers) > 0:
			err = l.renew(ctx, workers)
		}
		if err != nil {
			return err
		}
	}

	callCtx, cancel := storeCall(ctx, q.cfg.StoreTimeout)
	stats, err := q.store.LeaseStats(callCtx)
	cancel()
	if err != nil {
		return err
	}
	held := q.workerCount()
	owners := stats.Owners
	if !time.Now().Before(l.liveUntil) {
		owners++ // this process, not counted until its first lease call
	}
	share := (stats.Domains + owners - 1) / max(owners, 1)
	switch {
	case held < share:
		asked := time.Now()
		callCtx, cancel := storeCall(ctx, q.cfg.StoreTimeout)
		got, err := q.store.AcquireLeases(callCtx, q.cfg.OwnerID, ttl, share-held)
		cancel()
		if err != nil {
			return err
		}
		l.liveUntil = asked.Add(ttl)
		for _, st := range got {
			q.startWorker(st, holdUntil(asked, ttl))
		}
		// A store that renews the leases together is told of the new
		// ones at once, listing only them (the cursors of idle domains
		// wait for the ticker, as their renewals do): each is made to
		// follow the process when it is taken rather than at the next
		// renewal, so the start-up's acquisitions cost nothing in the
		// idle time after it.
		if k, ok := q.store.(store.LeaseKeeper); ok && len(got) > 0 {
			if err := l.keep(ctx, k, q.workerList(), false); err != nil {
				return err
			}
		}
	case held > share+1:
		q.releaseExcess(held - share)
	}
	return nil
}

// renew renews the leases of workers, the process's whole list, with
// RenewLeases: the way of stores that do not implement store.LeaseKeeper.
func (l *leaseKeeper) renew(ctx context.Context, workers []*worker) error {
	q := l.q
	ttl := q.cfg.LeaseTTL
	leases := make([]store.Lease, len(workers))
	for i, w := range workers {
		leases[i] = l.leaseOf(w)
	}
	asked := time.Now()
	callCtx, cancel := storeCall(ctx, l.renewTimeout())
	renewed, err := q.store.RenewLeases(callCtx, q.cfg.OwnerID, leases, ttl)
	cancel()
	if err != nil {
		return err
	}
	l.liveUntil = asked.Add(ttl)
	kept := make(map[string]store.Lease, len(renewed))
	for _, r := range renewed {
		kept[r.Domain] = r
	}
	for _, w := range workers {
		if r, ok := kept[w.domain]; ok {
			w.renewed(holdUntil(asked, ttl))
			if r.Revision != w.revision.Load() {
				w.reload() // an admin changed the domain
			}
		} else {
			q.dropWorker(w.domain, "lease lost")
		}
	}
	return nil
}

// renewTimeout bounds one renewal call: Config.StoreTimeout, and a third
// of the lease (the interval between renewals; at least a second), so that
// a call that does not answer leaves time for another before the workers
// stop sending.
func (l *leaseKeeper) renewTimeout() time.Duration {
	return min(l.q.cfg.StoreTimeout, max(l.q.cfg.LeaseTTL/3, time.Second))
}

// leaseOf is w's lease as a renewal gives it, with the ID through which
// the domain is settled when it is idle.
func (l *leaseKeeper) leaseOf(w *worker) store.Lease {
	q := l.q
	lease := w.lease()
	// An idle domain's cursor follows the log here, in the statement that
	// renews its lease anyway, rather than in a checkpoint per domain for
	// every activity. The window is asked first: a domain idle there has
	// offered its dead letters already, and the cursor waits until they
	// are saved.
	if through, ok := q.window.settledThrough(w); ok && !q.checkpoints.unsaved(w.domain) {
		lease.SettledThrough = through
	}
	return lease
}

// holdUntil is when a worker stops sending under a lease asked for at
// asked: a tenth of the TTL before the store can give the domain to another
// process (the store's expiry counts from when it ran the call, after
// asked), so that the last request of one owner ends before the first of the
// next begins, whatever the scheduling.
func holdUntil(asked time.Time, ttl time.Duration) time.Time {
	return asked.Add(ttl - ttl/10)
}

// renewed records a successful renewal and lets the worker dispatch again if
// it had paused for an expiring lease.
func (w *worker) renewed(until time.Time) {
	w.leaseUntil.Store(until.UnixNano())
	if w.leaseTimer != nil {
		w.leaseTimer.Reset(time.Until(until))
	}
	if w.leaseWait.Swap(false) {
		w.poke() // it stopped dispatching for the lease; idle ones sleep on
	}
}

package queue

import (
	"context"
	"time"

	"github.com/apqueue/apqueue/store"
)

// keptLeases is what the store knows of this process's leases when it
// renews them together (store.LeaseKeeper): the change mark that says
// whether anything happened to them, and how many follow the process (each
// worker's keptLease says whether its does). A renewal then lists only the
// leases that need the store (new ones, cursors that rose), so an idle
// process holding 20,000 domains costs the store and itself a few rows per
// renewal, not 20,000. It belongs to the lease keeper's run goroutine.
type keptLeases struct {
	// known says that a Full call succeeded and that mark and followers
	// are what it and the calls after it left.
	known bool
	mark  int64
	// followers counts the workers whose lease follows the process.
	followers int
	// timer drops the workers whose lease passed unrenewed, the job of
	// each worker's own timer until its lease follows the process.
	timer *time.Timer
}

// keptLease is what the store knows of one worker's lease (see
// keptLeases). It belongs to the lease keeper's run goroutine.
type keptLease struct {
	// follows says the store renews the lease with the process, unlisted.
	follows bool
	// settled is the SettledThrough last given for it.
	settled int64
}

// stop stops the timer, when the lease keeper ends.
func (k *keptLeases) stop() {
	if k.timer != nil {
		k.timer.Stop()
	}
}

// listedLease is a lease one KeepLeases call lists.
type listedLease struct {
	w     *worker
	lease store.Lease
}

// keep renews every lease of the process through k. It lists only the
// leases that need the store, and looks at the whole list again (a Full
// call) only when the store's mark says a lease may have been lost or a
// domain changed by an admin, when a worker ended without its lease being
// released or lost, or on the first call. So a lease lost to another owner
// and an admin's change made in another process reach the worker at the
// next renewal, as with RenewLeases. Unless settle is set, it lists the
// leases new to the store only, and raises no cursor.
func (l *leaseKeeper) keep(ctx context.Context, k store.LeaseKeeper, workers []*worker, settle bool) error {
	kept := &l.kept
	full := !kept.known
	followers := 0
	for _, w := range workers {
		if w.keptLease.follows {
			followers++
		}
	}
	// A lease that follows the process without a worker would be renewed
	// for as long as the process lives, and its domain never worked: the
	// worker ended without the lease being released (a release that
	// failed) or noticed lost. A Full call lets it go.
	if followers != kept.followers {
		full = true
	}
	asked := time.Now()
	listed, res, err := l.keepCall(ctx, k, full, settle, workers)
	if err != nil {
		return err
	}
	if !full && res.Changed {
		full = true
		asked = time.Now()
		if listed, res, err = l.keepCall(ctx, k, true, settle, workers); err != nil {
			return err
		}
	}
	ttl := l.q.cfg.LeaseTTL
	l.liveUntil = asked.Add(ttl)
	until := holdUntil(asked, ttl)
	if full {
		kept.followers = 0
		for _, w := range workers {
			w.keptLease.follows = false
		}
	}
	got := make(map[string]store.Lease, len(res.Leases))
	for _, r := range res.Leases {
		got[r.Domain] = r
	}
	for _, ll := range listed {
		w := ll.w
		r, ok := got[w.domain]
		if !ok {
			// Listed and not renewed: lost.
			if w.keptLease.follows {
				kept.followers--
			}
			w.keptLease = keptLease{}
			l.q.drop(w, "lease lost")
			continue
		}
		if !w.keptLease.follows {
			kept.followers++
			w.follows()
		}
		settled := w.keptLease.settled
		if settle {
			settled = ll.lease.SettledThrough
		}
		w.keptLease = keptLease{follows: true, settled: settled}
		if r.Revision != w.revision.Load() {
			w.reload() // an admin changed the domain
		}
	}
	for _, w := range workers {
		if w.keptLease.follows {
			w.kept(until)
		}
	}
	kept.known, kept.mark = true, res.Mark
	if kept.timer == nil {
		kept.timer = time.AfterFunc(time.Until(until), l.expired)
	} else {
		kept.timer.Reset(time.Until(until))
	}
	return nil
}

// keepCall makes one KeepLeases call: the whole list when full, else the
// leases that need the store (new to it, or, when settle is set, with a
// cursor to raise). It returns the leases it listed.
func (l *leaseKeeper) keepCall(ctx context.Context, k store.LeaseKeeper, full, settle bool, workers []*worker) ([]listedLease, store.LeaseKept, error) {
	keep := store.LeaseKeep{Full: full, Since: l.kept.mark}
	var listed []listedLease
	if full {
		listed = make([]listedLease, 0, len(workers))
	}
	for _, w := range workers {
		lease := w.lease()
		if settle {
			lease = l.leaseOf(w)
		}
		if full || !w.keptLease.follows || lease.SettledThrough > w.keptLease.settled {
			listed = append(listed, listedLease{w: w, lease: lease})
			keep.Leases = append(keep.Leases, lease)
		}
	}
	callCtx, cancel := storeCall(ctx, l.renewTimeout())
	defer cancel()
	res, err := k.KeepLeases(callCtx, l.q.cfg.OwnerID, keep, l.q.cfg.LeaseTTL)
	return listed, res, err
}

// expired drops the workers whose lease passed unrenewed: the keeper's
// calls failed or hung for longer than the lease. It runs on the timer's
// goroutine, so it looks only at what the workers publish.
func (l *leaseKeeper) expired() {
	now := time.Now().UnixNano()
	for _, w := range l.q.workerList() {
		if w.leaseUntil.Load() <= now {
			l.q.drop(w, "lease expired before it was renewed")
		}
	}
}

// kept records that the worker's lease, which follows the process, holds
// until the given time, and lets the worker dispatch again if it had
// paused for an expiring lease. The lease keeper's timer watches the time.
func (w *worker) kept(until time.Time) {
	w.leaseUntil.Store(until.UnixNano())
	if w.leaseWait.Swap(false) {
		w.poke() // it stopped dispatching for the lease; idle ones sleep on
	}
}

// follows records that the worker's lease follows the process from now
// on: the lease keeper's timer takes over from the worker's own.
func (w *worker) follows() {
	if w.leaseTimer != nil {
		w.leaseTimer.Stop()
	}
}

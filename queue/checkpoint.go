package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/apqueue/apqueue/store"
)

// checkpointer saves, in one store call, the states the workers offered
// since the last save, on an interval and early when a domain has settled
// many deliveries. Workers offer a copy of their state whenever it changes
// (worker.offer); the checkpointer never touches a worker's own state, so a
// save costs in proportion to the domains that changed, not to the domains
// this process holds.
type checkpointer struct {
	q     *Queue
	wants chan struct{}

	saving sync.Mutex // one save at a time, so no older state overtakes a newer one

	mu     sync.Mutex
	offers map[string]*offer // the latest unsaved state of each domain
	inSave map[string]*offer // the offers a save is writing now
}

// offer is what a worker handed over for saving.
type offer struct {
	w     *worker
	state store.DomainState
	dls   []store.DeadLetter
	seq   int64 // the worker's settleSeq at the offer; see worker.saved
}

func newCheckpointer(q *Queue) *checkpointer {
	return &checkpointer{q: q, wants: make(chan struct{}, 1), offers: make(map[string]*offer), inSave: make(map[string]*offer)}
}

// kick asks for a checkpoint soon, without blocking.
func (c *checkpointer) kick() {
	select {
	case c.wants <- struct{}{}:
	default:
	}
}

// offer records st as the latest state of w's domain and appends its new
// dead letters. Called by the worker's run goroutine.
func (c *checkpointer) offer(w *worker, st store.DomainState, dls []store.DeadLetter, seq int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.offers[w.domain]
	if o != nil && o.state.LeaseToken > st.LeaseToken {
		return // a worker of an older lease, ending: the store would refuse it
	}
	if o == nil || o.state.LeaseToken < st.LeaseToken {
		// A newer lease: what the older one did not save, the store would
		// refuse with it.
		o = &offer{w: w}
		c.offers[w.domain] = o
	}
	o.w = w
	o.state = st
	o.dls = append(o.dls, dls...)
	o.seq = seq
}

// unsaved reports whether dom has an offer not yet saved: its dead letters
// are not in the store yet, so its cursor must not be moved past them.
func (c *checkpointer) unsaved(dom string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offers[dom] != nil || c.inSave[dom] != nil
}

func (c *checkpointer) run(ctx context.Context) {
	ticker := time.NewTicker(c.q.cfg.CheckpointInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-c.wants:
		}
		if err := c.save(ctx); err != nil && ctx.Err() == nil {
			c.q.logger.WarnContext(ctx, "apqueue: checkpoint failed, will retry", slog.Any("error", err))
		}
	}
}

// save writes every offered state and dead letter. Domains whose lease
// turned out lost are dropped from this process; states refused because an
// admin changed the domain meanwhile take the change in and are saved again
// at once (and their workers reload it).
func (c *checkpointer) save(ctx context.Context) error {
	c.saving.Lock()
	defer c.saving.Unlock()
	stale, err := c.saveOnce(ctx)
	if err != nil || len(stale) == 0 {
		return err
	}
	if err := c.mergeAdminChanges(ctx, stale); err != nil {
		return err
	}
	stale, err = c.saveOnce(ctx)
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		return fmt.Errorf("domains changed again while saving, will retry: %v", stale)
	}
	return nil
}

// saveOnce makes one Checkpoint call with every offer and returns the
// domains refused as stale, whose offers are put back.
func (c *checkpointer) saveOnce(ctx context.Context) ([]string, error) {
	c.mu.Lock()
	taken := c.offers
	c.offers = make(map[string]*offer)
	saving := make([]string, 0, len(taken)) // taken loses the lost domains below
	for d, o := range taken {
		c.inSave[d] = o
		saving = append(saving, d)
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		for _, d := range saving {
			delete(c.inSave, d)
		}
		c.mu.Unlock()
		c.q.quiet.notify() // a Drain may wait for these to be saved
	}()
	if len(taken) == 0 {
		return nil, nil
	}
	states := make([]store.DomainState, 0, len(taken))
	var dls []store.DeadLetter
	for _, o := range taken {
		states = append(states, o.state)
		dls = append(dls, o.dls...)
	}
	callCtx, cancel := storeCall(ctx, c.q.cfg.StoreTimeout)
	err := c.q.store.Checkpoint(callCtx, states, dls)
	cancel()
	if err == nil {
		for _, o := range taken {
			o.w.saved(o.seq)
		}
		return nil, nil
	}
	var lost *store.LeaseLostError
	var staleErr *store.StaleStateError
	refusedOnly := false
	if errors.As(err, &lost) {
		// The refused domains belong to another process now, which re-sends
		// what was not saved here.
		for _, d := range lost.Domains {
			if o := taken[d]; o != nil {
				c.q.drop(o.w, "lease lost at checkpoint")
			}
			delete(taken, d)
		}
		refusedOnly = true
	}
	var stale []string
	if errors.As(err, &staleErr) {
		stale = staleErr.Domains
		refusedOnly = true
	}
	if refusedOnly {
		for d, o := range taken {
			if !slices.Contains(stale, d) {
				o.w.saved(o.seq) // saved: only the lost and the stale were refused
			}
		}
	}
	c.restore(taken, func(d string) bool { return !refusedOnly || slices.Contains(stale, d) })
	if refusedOnly {
		return stale, nil // every other state was saved
	}
	return nil, err
}

// restore puts back the taken offers of the domains keep selects: a newer
// offer keeps its state, and the older dead letters go first.
func (c *checkpointer) restore(taken map[string]*offer, keep func(string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for d, o := range taken {
		if !keep(d) {
			continue
		}
		if newer := c.offers[d]; newer != nil {
			newer.dls = append(o.dls, newer.dls...)
			continue
		}
		c.offers[d] = o
	}
}

// mergeAdminChanges re-reads the given domains, takes the admin changes
// into their offered states, so that they can be saved again, and asks
// their workers to reload.
func (c *checkpointer) mergeAdminChanges(ctx context.Context, domains []string) error {
	callCtx, cancel := storeCall(ctx, c.q.cfg.StoreTimeout)
	defer cancel()
	rows, err := c.q.store.Domains(callCtx, domains)
	if err != nil {
		return fmt.Errorf("reloading domains changed by an admin: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rows {
		o := c.offers[r.Domain]
		if o == nil {
			continue
		}
		o.state, _ = mergeAdmin(o.state, r)
		o.w.reload()
	}
	return nil
}

// mergeAdmin takes into own, a state based on an older revision, what
// changed in row: the shared inbox, a cursor moved up (skip, retention),
// and the admin's changes of status and backoff. The revision also moves
// for changes that are not an admin's (a new shared inbox, a retention
// fast-forward), so what the owner learned since it last saved stands
// unless the row says otherwise: a pause, a resume, a suspension, its end
// or a revival (a live status with the backoff cleared) replaces the
// status, and cleared
// backoff clears it; the owner's own revival of a dead domain, or its
// unsaved failures, are not undone. It reports whether the change cleared
// the backoff.
func mergeAdmin(own, row store.DomainState) (store.DomainState, bool) {
	if row.Revision == own.Revision {
		return own, false
	}
	cleared := row.FailCount == 0 && row.NextAttemptAt.IsZero() && row.LastError == ""
	switch {
	case row.Status == store.StatusPaused, own.Status == store.StatusPaused:
		own.Status = row.Status // paused, or resumed
	case row.Status == store.StatusSuspended, own.Status == store.StatusSuspended:
		own.Status = row.Status // suspended, or unsuspended
	case row.Status == store.StatusActive && own.Status == store.StatusDead && cleared:
		own.Status = row.Status // marked alive
	}
	if cleared && (own.FailCount > 0 || !own.NextAttemptAt.IsZero() || !own.FailingSince.IsZero() || own.LastError != "") {
		own.FailCount = 0
		own.FailingSince = time.Time{}
		own.NextAttemptAt = time.Time{}
		own.LastError = ""
	} else {
		cleared = false
	}
	own.SharedInbox = row.SharedInbox
	own.Revision = row.Revision
	own.Cursor = max(own.Cursor, row.Cursor)
	return own, cleared
}

package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apqueue/apqueue/store"
)

// checkpointer saves the changed state of every domain of this process in
// one store call, on an interval and early when a domain has settled many
// deliveries since the last save.
type checkpointer struct {
	q     *Queue
	wants chan struct{}
	mu    sync.Mutex // one save at a time, so no older state overtakes a newer one
}

func newCheckpointer(q *Queue) *checkpointer {
	return &checkpointer{q: q, wants: make(chan struct{}, 1)}
}

// kick asks for a checkpoint soon, without blocking.
func (c *checkpointer) kick() {
	select {
	case c.wants <- struct{}{}:
	default:
	}
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
		if err := c.save(ctx, c.q.workerList()); err != nil && ctx.Err() == nil {
			c.q.logger.WarnContext(ctx, "apqueue: checkpoint failed, will retry", slog.Any("error", err))
		}
	}
}

// save checkpoints the given workers' changed states and dead letters, one
// save at a time. Domains whose lease turned out lost are dropped from this
// process; domains an admin changed meanwhile take the change in and are
// saved again at once.
func (c *checkpointer) save(ctx context.Context, workers []*worker) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	stale, err := c.saveOnce(ctx, workers)
	if err != nil || len(stale) == 0 {
		return err
	}
	if err := c.q.mergeAdminChanges(ctx, stale); err != nil {
		return err
	}
	stale, err = c.saveOnce(ctx, stale)
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		names := make([]string, len(stale))
		for i, w := range stale {
			names[i] = w.domain
		}
		return fmt.Errorf("domains changed again while saving, will retry: %s", strings.Join(names, ", "))
	}
	return nil
}

// saveOnce makes one Checkpoint call and returns the workers whose states
// were refused as stale (their dead letters are put back).
func (c *checkpointer) saveOnce(ctx context.Context, workers []*worker) ([]*worker, error) {
	var states []store.DomainState
	var dls []store.DeadLetter
	var taken []*worker
	for _, w := range workers {
		st, wdl, ok := w.takeCheckpoint()
		if !ok {
			continue
		}
		states = append(states, st)
		dls = append(dls, wdl...)
		taken = append(taken, w)
	}
	if len(states) == 0 {
		return nil, nil
	}
	err := c.q.store.Checkpoint(ctx, states, dls)
	if err == nil {
		return nil, nil
	}
	var lost *store.LeaseLostError
	var staleErr *store.StaleStateError
	refusedOnly := false
	if errors.As(err, &lost) {
		// The refused domains belong to another process now, which re-sends
		// what was not saved here.
		for _, d := range lost.Domains {
			c.q.dropWorker(d, "lease lost at checkpoint")
		}
		refusedOnly = true
	}
	var stale []*worker
	if errors.As(err, &staleErr) {
		for _, w := range taken {
			if slices.Contains(staleErr.Domains, w.domain) {
				w.restoreCheckpoint(dlsOf(dls, w.domain))
				stale = append(stale, w)
			}
		}
		refusedOnly = true
	}
	if refusedOnly {
		return stale, nil // every other state was saved
	}
	for _, w := range taken {
		w.restoreCheckpoint(dlsOf(dls, w.domain))
	}
	return nil, err
}

func dlsOf(dls []store.DeadLetter, domain string) []store.DeadLetter {
	var out []store.DeadLetter
	for _, dl := range dls {
		if dl.Domain == domain {
			out = append(out, dl)
		}
	}
	return out
}

// takeCheckpoint returns the worker's state and dead letters to save if it
// changed since the last checkpoint, and marks it clean.
func (w *worker) takeCheckpoint() (store.DomainState, []store.DeadLetter, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.dirty && len(w.deadLetters) == 0 {
		return store.DomainState{}, nil, false
	}
	dls := w.deadLetters
	w.deadLetters = nil
	w.dirty = false
	w.settledSince = 0
	return w.state, dls, true
}

// restoreCheckpoint puts back what a failed checkpoint did not save.
func (w *worker) restoreCheckpoint(dls []store.DeadLetter) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deadLetters = append(dls, w.deadLetters...)
	w.dirty = true
}

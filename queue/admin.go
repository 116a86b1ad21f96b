package queue

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/apqueue/apqueue/internal/domain"
	"github.com/apqueue/apqueue/store"
)

// Admin operations change a domain's saved state through the store, so they
// work whichever process holds the domain: the owner takes the change in at
// once when it is this process, and at its next lease renewal (a third of
// Config.LeaseTTL) otherwise; until then the store refuses the owner's saves
// that would undo it.

// Pause stops deliveries to a domain; its backlog is kept and retention does
// not prune past it.
func (q *Queue) Pause(ctx context.Context, dom string) error {
	_, err := q.changeDomain(ctx, dom, store.DomainChange{Status: store.StatusPaused}, "paused")
	return err
}

// Resume restarts deliveries to a paused domain.
func (q *Queue) Resume(ctx context.Context, dom string) error {
	_, err := q.changeDomain(ctx, dom, store.DomainChange{Status: store.StatusActive}, "resumed")
	return err
}

// RetryNow clears a domain's backoff so that the next attempt is made now.
func (q *Queue) RetryNow(ctx context.Context, dom string) error {
	_, err := q.changeDomain(ctx, dom, store.DomainChange{ClearBackoff: true}, "backoff cleared")
	return err
}

// MarkAlive makes a dead domain active again, with its backoff cleared, and
// delivers its backlog from its cursor.
func (q *Queue) MarkAlive(ctx context.Context, dom string) error {
	_, err := q.changeDomain(ctx, dom, store.DomainChange{Status: store.StatusActive, ClearBackoff: true}, "marked alive")
	return err
}

// SkipToHead moves a domain's cursor to the head of the log: what it has not
// received yet is never sent to it. It returns how many log IDs were
// skipped, and logs the skip.
func (q *Queue) SkipToHead(ctx context.Context, dom string) (int64, error) {
	n, err := domain.Normalize(dom, "")
	if err != nil {
		return 0, fmt.Errorf("queue: skip to head: %w", err)
	}
	states, err := q.store.Domains(ctx, []string{n})
	if err != nil {
		return 0, fmt.Errorf("queue: skip to head: %w", err)
	}
	if len(states) == 0 {
		return 0, fmt.Errorf("queue: skip to head: domain %q: %w", n, store.ErrNotFound)
	}
	head, err := q.store.Head(ctx)
	if err != nil {
		return 0, fmt.Errorf("queue: skip to head: %w", err)
	}
	after, err := q.changeDomain(ctx, n, store.DomainChange{SkipTo: head}, "skipped to head")
	if err != nil {
		return 0, err
	}
	skipped := max(after.Cursor-states[0].Cursor, 0)
	q.logger.WarnContext(ctx, "apqueue: domain skipped to head; these activities will not be delivered to it",
		slog.String("domain", n), slog.Int64("from", states[0].Cursor), slog.Int64("to", after.Cursor), slog.Int64("skipped_ids", skipped))
	return skipped, nil
}

func (q *Queue) changeDomain(ctx context.Context, dom string, change store.DomainChange, what string) (store.DomainState, error) {
	n, err := domain.Normalize(dom, "")
	if err != nil {
		return store.DomainState{}, fmt.Errorf("queue: %s: %w", what, err)
	}
	st, err := q.store.ChangeDomain(ctx, n, change)
	if err != nil {
		return store.DomainState{}, fmt.Errorf("queue: %s %s: %w", n, what, err)
	}
	q.logger.InfoContext(ctx, "apqueue: domain "+what, slog.String("domain", n), slog.String("status", string(st.Status)))
	q.mu.Lock()
	w := q.workers[n]
	q.mu.Unlock()
	if w != nil {
		w.reload()
	}
	return st, nil
}

// DeadLetters lists the deliveries that failed for good, oldest first.
func (q *Queue) DeadLetters(ctx context.Context, filter store.DeadLetterFilter) ([]store.DeadLetter, error) {
	dls, err := q.store.DeadLetters(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("queue: dead letters: %w", err)
	}
	return dls, nil
}

// RequeueDeadLetters enqueues the given dead letters again, each as a new
// activity to its inbox, and then deletes them. It returns the new activity
// IDs, in the order of the dead letters' IDs. Unknown IDs are an error and
// nothing is done.
func (q *Queue) RequeueDeadLetters(ctx context.Context, ids ...int64) ([]int64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	dls, err := q.store.DeadLetters(ctx, store.DeadLetterFilter{IDs: ids, Limit: len(ids)})
	if err != nil {
		return nil, fmt.Errorf("queue: requeue dead letters: %w", err)
	}
	if len(dls) != len(dedupeIDs(ids)) {
		return nil, fmt.Errorf("queue: requeue dead letters: %d of %d not found: %w", len(dedupeIDs(ids))-len(dls), len(dedupeIDs(ids)), store.ErrNotFound)
	}
	acts := make([]Activity, len(dls))
	for i, dl := range dls {
		if dl.Inbox == "" {
			return nil, fmt.Errorf("queue: requeue dead letter %d: it has no inbox (%s)", dl.ID, dl.Reason)
		}
		acts[i] = Activity{Body: dl.Body, Actor: dl.Actor, OrderingKey: dl.OrderingKey, Inboxes: []string{dl.Inbox}}
	}
	newIDs, err := q.EnqueueMany(ctx, acts)
	if err != nil {
		return nil, fmt.Errorf("queue: requeue dead letters: %w", err)
	}
	// Enqueued first, deleted second: a failure in between re-sends, never
	// loses.
	if _, err := q.store.DeleteDeadLetters(ctx, ids); err != nil {
		return newIDs, fmt.Errorf("queue: requeued, but deleting the dead letters failed: %w", err)
	}
	return newIDs, nil
}

// DiscardDeadLetters deletes dead letters and returns how many it deleted.
func (q *Queue) DiscardDeadLetters(ctx context.Context, ids ...int64) (int, error) {
	n, err := q.store.DeleteDeadLetters(ctx, ids)
	if err != nil {
		return 0, fmt.Errorf("queue: discard dead letters: %w", err)
	}
	return n, nil
}

func dedupeIDs(ids []int64) map[int64]bool {
	m := make(map[int64]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// merge takes an admin's change, saved in row, into the worker's state.
// What it means for the pending deliveries (dropping skipped ones, retrying
// now) is applied at once. Called by the run goroutine.
func (w *worker) merge(row store.DomainState) {
	merged, cleared := mergeAdmin(w.state, row)
	if merged == w.state {
		return
	}
	skip := merged.Cursor > w.state.Cursor
	w.state = merged
	if skip {
		w.applySkip(merged.Cursor)
	}
	if cleared {
		for _, d := range w.pending {
			d.nextAttempt = time.Time{}
		}
	}
	w.q.observe(Event{Kind: EventDomainStatus, Domain: w.domain, Status: row.Status, Reason: "admin change"})
}

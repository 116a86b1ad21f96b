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
// not prune past it. A suspended domain is refused with ErrSuspended.
func (q *Queue) Pause(ctx context.Context, dom string) error {
	if err := q.refuseSuspended(ctx, dom, "pause"); err != nil {
		return err
	}
	_, err := q.changeDomain(ctx, dom, store.DomainChange{Status: store.StatusPaused}, "paused")
	return err
}

// Resume restarts deliveries to a paused domain. A suspended domain is
// refused with ErrSuspended: see Unsuspend.
func (q *Queue) Resume(ctx context.Context, dom string) error {
	if err := q.refuseSuspended(ctx, dom, "resume"); err != nil {
		return err
	}
	_, err := q.changeDomain(ctx, dom, store.DomainChange{Status: store.StatusActive}, "resumed")
	return err
}

// RetryNow clears a domain's backoff so that the next attempt is made now.
func (q *Queue) RetryNow(ctx context.Context, dom string) error {
	_, err := q.changeDomain(ctx, dom, store.DomainChange{ClearBackoff: true}, "backoff cleared")
	return err
}

// MarkAlive makes a dead domain active again, with its backoff cleared, and
// delivers its backlog from its cursor. A suspended domain is refused with
// ErrSuspended: see Unsuspend.
func (q *Queue) MarkAlive(ctx context.Context, dom string) error {
	if err := q.refuseSuspended(ctx, dom, "mark alive"); err != nil {
		return err
	}
	_, err := q.changeDomain(ctx, dom, store.DomainChange{Status: store.StatusActive, ClearBackoff: true}, "marked alive")
	return err
}

// SkipToHead moves a domain's cursor to the head of the log: what it has not
// received yet is never sent to it. It returns how many log IDs were
// skipped, and logs the skip.
func (q *Queue) SkipToHead(ctx context.Context, dom string) (int64, error) {
	return q.moveToHead(ctx, dom, store.DomainChange{}, "skipped to head")
}

// moveToHead applies change to a domain with its cursor moved to the head
// of the log, and logs how many log IDs it skipped.
func (q *Queue) moveToHead(ctx context.Context, dom string, change store.DomainChange, what string) (int64, error) {
	n, err := domain.Normalize(dom, "")
	if err != nil {
		return 0, fmt.Errorf("queue: %s: %w", what, err)
	}
	before, err := q.domainState(ctx, n, what)
	if err != nil {
		return 0, err
	}
	head, err := q.store.Head(ctx)
	if err != nil {
		return 0, fmt.Errorf("queue: %s: %w", what, err)
	}
	change.SkipTo = head
	after, err := q.changeDomain(ctx, n, change, what)
	if err != nil {
		return 0, err
	}
	skipped := max(after.Cursor-before.Cursor, 0)
	if skipped > 0 {
		q.logger.WarnContext(ctx, "apqueue: domain "+what+"; these activities will not be delivered to it",
			slog.String("domain", n), slog.Int64("from", before.Cursor), slog.Int64("to", after.Cursor), slog.Int64("skipped_ids", skipped))
	}
	return skipped, nil
}

// Suspend stops all delivery to a domain, for one the server defederated
// from or blocked: nothing more is sent to it, not even the probe of a
// dead domain, and what it had not received yet never will be (its cursor
// moves to the head, and the skip is logged). From then on, an activity
// enqueued for it, by any process sharing the store, is not delivered
// there and is reported to the Observer as EventSuspendedDropped (an
// activity for all domains is not delivered there either, without an event
// per suspended domain); unlike a paused domain, a suspended one holds back
// no retention. The process that
// works the domain takes the suspension in at once when it is this one,
// and at its next lease renewal otherwise. A domain the queue has not seen
// yet is registered, suspended, so that a block can be set before any
// activity addresses the domain. It returns how many log IDs the domain
// skipped.
func (q *Queue) Suspend(ctx context.Context, dom string) (int64, error) {
	n, err := domain.Normalize(dom, "")
	if err != nil {
		return 0, fmt.Errorf("queue: suspend: %w", err)
	}
	if err := q.store.RegisterDomains(ctx, []store.DomainRegistration{{Domain: n}}); err != nil {
		return 0, fmt.Errorf("queue: suspend: %w", err)
	}
	return q.moveToHead(ctx, n, store.DomainChange{Status: store.StatusSuspended}, "suspended")
}

// Unsuspend ends a domain's suspension: it is delivered to again from the
// head of the log, with its backoff cleared; what was enqueued for it while
// it was suspended is not sent. A domain that is not suspended is refused
// with ErrNotSuspended.
func (q *Queue) Unsuspend(ctx context.Context, dom string) error {
	n, err := domain.Normalize(dom, "")
	if err != nil {
		return fmt.Errorf("queue: unsuspend: %w", err)
	}
	st, err := q.domainState(ctx, n, "unsuspend")
	if err != nil {
		return err
	}
	if st.Status != store.StatusSuspended {
		return fmt.Errorf("queue: unsuspend %s (%s): %w", n, st.Status, ErrNotSuspended)
	}
	_, err = q.moveToHead(ctx, n, store.DomainChange{Status: store.StatusActive, ClearBackoff: true}, "unsuspended")
	return err
}

// Forget removes a domain and its saved state (cursor, progress, backoff,
// lease, signature scheme, suspension) from the store, as if it had never
// been seen: nothing more is sent to it. This process stops working it at
// once; another that works it stops at its next lease renewal, and cannot
// save its state back. The domain's dead letters are kept, to be inspected,
// requeued or discarded like any other (see DeadLetters; retention deletes
// them in time). If a later activity addresses the domain (an explicit
// inbox, or an audience that reaches it), the domain is registered again
// as a new one, from that activity on: no recipient is dropped silently.
// To stop delivering to a domain for good, Suspend it instead. An unknown
// domain is an error matching store.ErrNotFound.
func (q *Queue) Forget(ctx context.Context, dom string) error {
	n, err := domain.Normalize(dom, "")
	if err != nil {
		return fmt.Errorf("queue: forget: %w", err)
	}
	if err := q.store.ForgetDomain(ctx, n); err != nil {
		return fmt.Errorf("queue: forget %s: %w", n, err)
	}
	q.dropWorker(n, "forgotten by an admin")
	q.mu.Lock()
	delete(q.noticed, n) // so that its return gets a worker at once
	q.mu.Unlock()
	q.logger.InfoContext(ctx, "apqueue: domain forgotten", slog.String("domain", n))
	return nil
}

// refuseSuspended returns ErrSuspended when dom is suspended, for the
// admin operations that would end a suspension without moving the domain
// to the head.
func (q *Queue) refuseSuspended(ctx context.Context, dom, what string) error {
	n, err := domain.Normalize(dom, "")
	if err != nil {
		return fmt.Errorf("queue: %s: %w", what, err)
	}
	st, err := q.domainState(ctx, n, what)
	if err != nil {
		return err
	}
	if st.Status == store.StatusSuspended {
		return fmt.Errorf("queue: %s %s: %w", what, n, ErrSuspended)
	}
	return nil
}

// domainState reads the saved state of the normalised domain n.
func (q *Queue) domainState(ctx context.Context, n, what string) (store.DomainState, error) {
	states, err := q.store.Domains(ctx, []string{n})
	if err != nil {
		return store.DomainState{}, fmt.Errorf("queue: %s: %w", what, err)
	}
	if len(states) == 0 {
		return store.DomainState{}, fmt.Errorf("queue: %s: domain %q: %w", what, n, store.ErrNotFound)
	}
	return states[0], nil
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
		w.reloadNow(ctx, st)
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
// IDs, in the order of the dead letters' IDs. A dead letter recorded
// without an inbox (an AllDomains activity on a domain with no shared inbox
// known, audiences without a Resolver) goes to its domain's shared inbox,
// once one is known (SetSharedInbox). Unknown IDs, or a dead letter without
// an inbox whose domain still has no shared inbox, are an error and nothing
// is done.
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
	shared, err := q.sharedInboxesFor(ctx, dls)
	if err != nil {
		return nil, fmt.Errorf("queue: requeue dead letters: %w", err)
	}
	acts := make([]Activity, len(dls))
	for i, dl := range dls {
		inbox := dl.Inbox
		if inbox == "" {
			inbox = shared[dl.Domain]
		}
		if inbox == "" {
			return nil, fmt.Errorf("queue: requeue dead letter %d: it has no inbox (%s), and %s has no shared inbox known yet (SetSharedInbox)", dl.ID, dl.Reason, dl.Domain)
		}
		acts[i] = Activity{Body: dl.Body, Actor: dl.Actor, OrderingKey: dl.OrderingKey, Inboxes: []string{inbox}}
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

// sharedInboxesFor returns the shared inboxes known of the domains of the
// dead letters that have no inbox, by domain.
func (q *Queue) sharedInboxesFor(ctx context.Context, dls []store.DeadLetter) (map[string]string, error) {
	var names []string
	seen := make(map[string]bool)
	for _, dl := range dls {
		if dl.Inbox == "" && !seen[dl.Domain] {
			seen[dl.Domain] = true
			names = append(names, dl.Domain)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	states, err := q.store.Domains(ctx, names)
	if err != nil {
		return nil, err
	}
	shared := make(map[string]string, len(states))
	for _, st := range states {
		shared[st.Domain] = st.SharedInbox
	}
	return shared, nil
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

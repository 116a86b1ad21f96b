package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/apqueue/apqueue/store"
)

// Enqueue appends one activity to the log and returns its ID. Once it
// returns without error the activity is durable in the store, and it will
// reach every recipient or be recorded as a dead letter. Invalid input is an
// *ActivityError wrapping one of the Err* reasons, and changes nothing.
func (q *Queue) Enqueue(ctx context.Context, a Activity) (int64, error) {
	ids, err := q.EnqueueMany(ctx, []Activity{a})
	if err != nil {
		return 0, err
	}
	return ids[0], nil
}

// EnqueueMany appends a batch of activities atomically: all of them, in
// order, or none. It costs one store call however many recipients the
// activities have.
func (q *Queue) EnqueueMany(ctx context.Context, acts []Activity) ([]int64, error) {
	batch, err := q.prepareBatch(ctx, acts)
	if err != nil {
		return nil, err
	}
	res, err := q.store.Append(ctx, batch)
	if err != nil {
		return nil, fmt.Errorf("queue: enqueue: %w", err)
	}
	q.observeSuspended(ctx, res)
	// Wake this process's workers at once; the window's read notices new
	// domains and takes leases on them (noticeDomains).
	q.window.wake()
	return store.AppendedIDs(res), nil
}

// observeSuspended reports, for each activity appended, each of its
// domains that the store found suspended: nothing of it is delivered
// there.
func (q *Queue) observeSuspended(ctx context.Context, res []store.Appended) {
	for _, r := range res {
		for _, d := range r.Suspended {
			q.logger.DebugContext(ctx, "apqueue: activity not delivered to a suspended domain",
				slog.String("domain", d), slog.Int64("activity_id", r.ID))
			q.observe(Event{Kind: EventSuspendedDropped, Domain: d, ActivityID: r.ID, Status: store.StatusSuspended,
				Reason: "domain suspended"})
		}
	}
}

// EnqueueTx appends one activity inside the caller's transaction, so that it
// is delivered if and only if the transaction commits. tx comes from the
// store (postgres.Store.Tx wraps a pgx.Tx) and must belong to the same
// database as the queue's store. The activity gets its ID once the
// transaction has committed (see store.Tx), so EnqueueTx returns none.
func (q *Queue) EnqueueTx(ctx context.Context, tx store.Tx, a Activity) error {
	return q.EnqueueManyTx(ctx, tx, []Activity{a})
}

// EnqueueManyTx is EnqueueMany inside the caller's transaction.
func (q *Queue) EnqueueManyTx(ctx context.Context, tx store.Tx, acts []Activity) error {
	if tx == nil {
		return ErrNilTx
	}
	batch, err := q.prepareBatch(ctx, acts)
	if err != nil {
		return err
	}
	res, err := tx.Append(ctx, batch)
	if err != nil {
		return fmt.Errorf("queue: enqueue in transaction: %w", err)
	}
	q.observeSuspended(ctx, res)
	// The store notifies every process when the transaction commits.
	return nil
}

func (q *Queue) prepareBatch(ctx context.Context, acts []Activity) ([]store.NewActivity, error) {
	if len(acts) == 0 {
		return nil, ErrEmptyBatch
	}
	batch := make([]store.NewActivity, len(acts))
	for i, a := range acts {
		n, err := q.prepare(ctx, a)
		if err != nil {
			var re *ResolveError
			if errors.As(err, &re) {
				return nil, err
			}
			return nil, &ActivityError{Index: i, Err: err}
		}
		batch[i] = n
	}
	return batch, nil
}

// noticeDomains asks for a lease round the first time the log names a
// domain this process does not work, so that a new domain gets a worker at
// once rather than at the next periodic round. Domains worked by other
// processes trigger it once each.
func (q *Queue) noticeDomains(acts []store.Activity) {
	kick := false
	q.mu.Lock()
	for _, a := range acts {
		for _, d := range a.Domains {
			if _, held := q.workers[d]; !held && !q.noticed[d] {
				q.noticed[d] = true
				kick = true
			}
		}
	}
	q.mu.Unlock()
	if kick {
		q.leases.kick()
	}
}

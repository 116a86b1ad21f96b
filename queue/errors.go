package queue

import (
	"errors"
	"fmt"
)

// Errors for activities Enqueue refuses. They are wrapped in an
// *ActivityError that names the activity's position in the batch.
var (
	ErrInvalidBody  = errors.New("queue: body is not a JSON object")
	ErrBodyTooLarge = errors.New("queue: body too large")
	ErrMissingActor = errors.New("queue: activity has no actor IRI")
	ErrInvalidInbox = errors.New("queue: invalid inbox URL")
	ErrNoTargets    = errors.New("queue: activity has no recipients")
	ErrNoResolver   = errors.New("queue: activity has audiences but the queue has no Resolver")
	// ErrIdempotencyKeyTooLong is an Activity.IdempotencyKey longer than
	// store.IdempotencyKeyMaxLen bytes.
	ErrIdempotencyKeyTooLong = errors.New("queue: idempotency key too long")
)

// Other errors of the queue.
var (
	// ErrEmptyBatch is returned by EnqueueMany for an empty batch.
	ErrEmptyBatch = errors.New("queue: empty batch")
	// ErrNilTx is returned by EnqueueTx and EnqueueManyTx for a nil
	// transaction.
	ErrNilTx = errors.New("queue: nil transaction")
	// ErrStarted is returned by Start on a queue that was already started.
	ErrStarted = errors.New("queue: already started")
	// ErrNotStarted is returned by Stop on a queue that is not running.
	ErrNotStarted = errors.New("queue: not started")
	// ErrSuspended is returned by Pause, Resume and MarkAlive for a
	// suspended domain: only Unsuspend (or Forget) ends a suspension.
	ErrSuspended = errors.New("queue: domain is suspended")
	// ErrNotSuspended is returned by Unsuspend for a domain that is not
	// suspended.
	ErrNotSuspended = errors.New("queue: domain is not suspended")
)

// ActivityError reports why one activity of a batch was refused. Nothing of
// the batch was enqueued.
type ActivityError struct {
	// Index is the activity's position in the batch.
	Index int
	Err   error
}

func (e *ActivityError) Error() string {
	return fmt.Sprintf("activity %d: %v", e.Index, e.Err)
}

// Unwrap returns the reason, for errors.Is.
func (e *ActivityError) Unwrap() error { return e.Err }

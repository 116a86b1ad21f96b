package store

import (
	"context"
	"time"
)

// Store is the persistence contract of a queue. Implementations must be safe
// for concurrent use by many goroutines and, for shared databases, by many
// processes. Every method that can block takes a context first and returns an
// error wrapping ctx.Err() when the context ends.
//
// A store validates what it is given: a malformed argument (an empty domain, a
// non-positive TTL, an empty owner, a negative limit) is refused with an error
// that matches ErrInvalid and changes nothing.
//
// A store keeps times to the microsecond, as PostgreSQL does: it truncates
// finer times it is given, so that every store reads back the same time.
type Store interface {
	// Append atomically appends activities to the log in the given order and
	// returns their IDs, which are strictly increasing and greater than every
	// ID appended before. In the same atomic step it registers every domain
	// named in an activity's Domains that the store does not know yet, so that
	// no activity addressed to a new domain is skipped: the new domain's
	// cursor is at most the ID just before the first appended activity that
	// names it, and at most the Head of the log as readers saw it then (so an
	// append by another transaction that is still open, with a lower ID, is not
	// passed over). Either every activity is appended or none is. An empty
	// batch, or an activity without a body, is an error matching ErrInvalid.
	// It returns what it did with each activity, in the batch's order.
	//
	// An activity with an IdempotencyKey that an earlier appended activity
	// (or an earlier one of the same batch) carried within its
	// IdempotencyWindow is a duplicate: it is not appended, and its ID in
	// the result is that earlier activity's. This holds across concurrent
	// calls and processes: of any number of appends with one key, exactly
	// one writes. A duplicate's ID may be 0 while the earlier activity,
	// appended in a caller's transaction, is not numbered yet. IDs of the
	// activities appended are strictly increasing but need not be
	// contiguous.
	//
	// Each result lists the activity's domains that are suspended, as the
	// append saw them: the check is made by the store, in the same atomic
	// step, so it holds for every process that appends.
	Append(ctx context.Context, activities []NewActivity) ([]Appended, error)

	// Activities returns up to limit activities with ID greater than after, in
	// ID order. It never returns an activity with an ID greater than that of an
	// activity whose append has not yet committed, so a reader that advances
	// past the last returned ID never skips an activity that commits later.
	// Pruned activities are absent. limit must be positive.
	Activities(ctx context.Context, after int64, limit int) ([]Activity, error)

	// Head returns the highest ID that Activities may return now (see the
	// commit rule above), or 0 when the log has never held an activity.
	Head(ctx context.Context) (int64, error)

	// RegisterDomains adds domains the store does not know yet, with their
	// cursor at the current head, and sets the shared inbox of every listed
	// domain whose registration names one. A domain already known keeps its
	// cursor, status and lease; a change of its shared inbox increments its
	// Revision, so that its owner takes the new inbox in (see Checkpoint).
	RegisterDomains(ctx context.Context, domains []DomainRegistration) error

	// Domains returns the state of the named domains, or of every known domain
	// when names is empty, sorted by domain name. Unknown names are left out.
	Domains(ctx context.Context, names []string) ([]DomainState, error)

	// Checkpoint saves domain states and records dead letters in one atomic
	// step, fenced by leases: a state is saved only if its LeaseToken is still
	// the domain's current lease token and its Owner the lease's owner. States
	// that fail the check, and the dead letters of their domains, are not
	// saved; the rest are, and the error is a *LeaseLostError (matching
	// ErrLeaseLost) naming the refused domains. Likewise a state whose
	// Revision is not the domain's current one (an admin changed the domain
	// since the owner read it) is refused with its dead letters, reported by
	// a *StaleStateError (matching ErrStale); when both happen the error
	// joins both (errors.Join). A saved Cursor never moves a cursor
	// backwards: the stored cursor becomes the greater of the two, so an
	// owner's save can never undo what an admin skip, a retention
	// fast-forward or a lease renewal (see Lease.SettledThrough) moved on.
	// A dead letter is recorded once per delivery (activity, domain and
	// inbox): one already recorded is not recorded again, so that a
	// delivery given up on twice (by two owners, or before and after a
	// crash) is requeued once. It saves Cursor, Progress, Status,
	// FailCount, FailingSince, NextAttemptAt, LastStatus, LastError,
	// LastSuccessAt, SignatureScheme and SignatureCheckedAt; SharedInbox and
	// the lease fields are left as they are.
	// Dead letters get their ID and, when zero, their CreatedAt from the store.
	Checkpoint(ctx context.Context, states []DomainState, deadLetters []DeadLetter) error

	// AcquireLeases gives owner the leases, for ttl, of up to limit domains
	// that have no live lease (never leased, released, or expired), preferring
	// domains with the lowest cursor. Each acquisition increments the domain's
	// LeaseToken, so saves by a previous owner are refused from then on. It
	// returns the acquired domains' states with their new lease fields.
	AcquireLeases(ctx context.Context, owner string, ttl time.Duration, limit int) ([]DomainState, error)

	// RenewLeases extends to ttl from now (or later) the leases that owner
	// still holds among the given ones (matched by domain and token) and
	// returns them with their new expiry and the domain's current Revision.
	// A lease that expired but was not taken over by another owner is
	// renewed too. Leases that were lost are left out of the result. The
	// given leases are the owner's whole list: a lease of the owner missing
	// from it is not renewed and expires at most ttl after the call (a store
	// may renew an owner's leases together, writing one row for all of
	// them, as the PostgreSQL store does). In the same step it raises
	// the cursor of every renewed domain to the lease's SettledThrough when
	// that is higher (never lowers it): that is how an idle domain's cursor
	// follows the log without a checkpoint per domain.
	RenewLeases(ctx context.Context, owner string, leases []Lease, ttl time.Duration) ([]Lease, error)

	// ForgetDomain removes a domain and its state (cursor, progress, lease,
	// signature scheme, status), at once, whoever holds its lease: the
	// owner's next renewal or checkpoint finds the lease lost. Its dead
	// letters are kept. An activity appended later that names the domain
	// registers it again, as a domain never seen (at the head). An unknown
	// domain is an error matching ErrNotFound.
	ForgetDomain(ctx context.Context, domain string) error

	// ChangeDomain applies an admin's change to a domain at once, whoever
	// holds its lease, increments its Revision, and returns the new state.
	// An unknown domain is an error matching ErrNotFound.
	ChangeDomain(ctx context.Context, domain string, change DomainChange) (DomainState, error)

	// ReleaseLeases ends the given leases that owner still holds, so another
	// owner can acquire the domains at once. Leases already lost are ignored.
	// When owner holds no other lease afterwards it is leaving, and its
	// liveness ends too (see LeaseStats); an owner shedding part of its
	// domains stays live.
	ReleaseLeases(ctx context.Context, owner string, leases []Lease) error

	// LeaseStats reports how many domains are known and how many distinct
	// owners are live, so that processes sharing a store can split the
	// domains evenly without configuration. An owner is live while it holds
	// an unexpired lease, and also for ttl after each AcquireLeases or
	// RenewLeases call it made with that ttl, even if it got no domain: that
	// is how a process that has just started, and holds nothing yet, makes the
	// others give up part of their share. ReleaseLeases of an owner's last
	// leases ends the latter (the owner is leaving).
	LeaseStats(ctx context.Context) (LeaseStats, error)

	// DeadLetters returns dead letters matching filter in ID order, which is
	// the order they were recorded (oldest first), so AfterID pages them.
	DeadLetters(ctx context.Context, filter DeadLetterFilter) ([]DeadLetter, error)

	// DeleteDeadLetters removes the dead letters with the given IDs and
	// returns how many it removed. Unknown IDs are ignored.
	DeleteDeadLetters(ctx context.Context, ids []int64) (int, error)

	// Prune deletes activities that every live domain (status active or
	// paused) has settled: those with an ID at or below the lowest cursor of a
	// live domain, or at or below the head when no domain is live. Dead
	// domains whose cursor is below that point are fast-forwarded to it in the
	// same atomic step and reported, never skipped silently; their Revision
	// is incremented, so that an owner cannot save its older cursor back.
	// It also deletes the idempotency keys whose window has passed.
	// Suspended domains do not hold the point back either: those below it
	// are moved up to it in the same step, with their Revision incremented,
	// and are not reported (nothing is delivered to them anyway). When a
	// later step fails (deleting, say) after the fast-forward was made, it
	// returns the result so far with the error, so that the domains moved
	// are still reported.
	Prune(ctx context.Context) (PruneResult, error)

	// Listen calls notify whenever activities are appended, by this process
	// or, for a shared database, by any other, until ctx ends; it then returns
	// ctx.Err(). notify must not block: callers coalesce wake-ups. A store
	// that cannot notify returns ErrNotifyUnsupported at once, and the queue
	// falls back to polling.
	Listen(ctx context.Context, notify func()) error
}

// Tx is a caller's database transaction bound to the store that appends in
// it, so that an activity is delivered if and only if that transaction
// commits. Each store that supports transactional enqueue builds one from its
// own transaction type (postgres.Store.Tx takes a pgx.Tx), so passing the
// wrong kind of transaction is a compile error, not a run-time one.
type Tx interface {
	// Append appends activities as Store.Append does, inside the caller's
	// transaction: readers see them if and only if it commits. It returns
	// no IDs: a store may number activities appended in a transaction only
	// once the transaction has committed, so that IDs follow the order in
	// which readers can see them and an open transaction holds back no one
	// (the IDs are then greater than every ID readers have seen before the
	// commit). Domains the activities name are registered by the time
	// readers see the activities.
	//
	// Idempotency keys are honoured as by Store.Append: an activity whose
	// key was appended before (committed, or earlier in the same
	// transaction) is not appended. Of two transactions open at once with
	// the same key, the activity of the one that commits first is appended
	// and the other's is dropped when its transaction commits. The result
	// reports the duplicates seen in the transaction and the suspended
	// domains, as Store.Append does; its IDs may be 0 (see above).
	Append(ctx context.Context, activities []NewActivity) ([]Appended, error)
}

// DeadLetterPruner is implemented by stores that delete old dead letters in
// bulk. Every dead letter keeps a copy of its activity's body, so without
// retention the table only grows; the queue's periodic retention job calls
// PruneDeadLetters when its store implements it (queue.Config's
// DeadLetterRetention and DeadLetterCap).
type DeadLetterPruner interface {
	// PruneDeadLetters deletes the dead letters created before olderThan
	// (none by age when olderThan is zero) and, of every domain with more
	// than perDomain dead letters, the oldest ones beyond that count (no
	// cap when perDomain is zero), and returns how many it deleted. A
	// negative perDomain is an error matching ErrInvalid.
	PruneDeadLetters(ctx context.Context, olderThan time.Time, perDomain int) (int, error)
}

package store

import "time"

// NewActivity is an activity to append to the log. The queue validates and
// normalises it first; a store checks only what its own integrity needs.
type NewActivity struct {
	// Actor is the IRI of the local actor that signs the deliveries.
	Actor string
	// OrderingKey groups activities that must never be in flight to one
	// domain at once (by default the IRI of the activity's object).
	OrderingKey string
	// Body is the JSON object delivered to every inbox.
	Body []byte
	// Inboxes are explicit, normalised inbox URLs.
	Inboxes []string
	// Domains are the normalised domains of Inboxes, without repeats. The
	// store registers those it does not know yet.
	Domains []string
	// Audiences are keys (for example a followers collection IRI) that the
	// queue's Resolver turns into the inboxes of each domain.
	Audiences []string
	// AllDomains addresses the activity to every known domain, for example an
	// account deletion.
	AllDomains bool
	// IdempotencyKey, when not empty, makes the append idempotent: while an
	// activity appended with the same key is remembered (for
	// IdempotencyWindow from its append), the store appends nothing and
	// returns that activity's ID instead. At most IdempotencyKeyMaxLen bytes.
	IdempotencyKey string
	// IdempotencyWindow is how long the store remembers IdempotencyKey. It
	// must be positive when IdempotencyKey is set. Expired keys are deleted
	// by Prune.
	IdempotencyWindow time.Duration
}

// IdempotencyKeyMaxLen is the longest NewActivity.IdempotencyKey a store
// accepts, in bytes.
const IdempotencyKeyMaxLen = 256

// Appended is what Store.Append (or Tx.Append) did with one activity of
// its batch.
type Appended struct {
	// ID is the activity's ID. For a duplicate, it is the ID of the
	// activity that holds its idempotency key. It is 0 when the store
	// numbers the activity (or the one holding the key) only once a
	// caller's transaction commits (see Tx).
	ID int64
	// Duplicate reports that the activity was not appended: its
	// IdempotencyKey was taken (see NewActivity.IdempotencyKey).
	Duplicate bool
	// Suspended lists the domains among the activity's Domains that were
	// suspended (StatusSuspended) when it was appended, in the order of
	// Domains: the activity is never delivered to them.
	Suspended []string
}

// AppendedIDs returns the IDs of res (nil for nil).
func AppendedIDs(res []Appended) []int64 {
	if res == nil {
		return nil
	}
	out := make([]int64, len(res))
	for i, r := range res {
		out[i] = r.ID
	}
	return out
}

// Activity is an activity in the log.
type Activity struct {
	// ID is assigned by the store: strictly increasing, never reused.
	ID int64
	// EnqueuedAt is when the store appended the activity.
	EnqueuedAt time.Time

	Actor       string
	OrderingKey string
	Body        []byte
	Inboxes     []string
	Domains     []string
	Audiences   []string
	AllDomains  bool
}

// DomainStatus says whether a domain is being delivered to.
type DomainStatus string

const (
	// StatusActive is a domain that is delivered to (possibly in backoff).
	StatusActive DomainStatus = "active"
	// StatusPaused is a domain an admin paused: nothing is sent, its backlog
	// is kept.
	StatusPaused DomainStatus = "paused"
	// StatusDead is a domain that failed continuously for the queue's
	// DeadAfter, or answered 410 Gone from its shared inbox: it is only probed
	// now and then, and its backlog is not kept for it.
	StatusDead DomainStatus = "dead"
	// StatusSuspended is a domain an admin suspended (defederated or
	// blocked): nothing is delivered to it, not even a probe, activities
	// appended for it are reported in Appended.Suspended, and its backlog
	// is not kept for it (Prune passes it by).
	StatusSuspended DomainStatus = "suspended"
)

// Valid reports whether s is one of the defined statuses.
func (s DomainStatus) Valid() bool {
	switch s {
	case StatusActive, StatusPaused, StatusDead, StatusSuspended:
		return true
	}
	return false
}

// DomainRegistration names a domain, with its shared inbox when known.
type DomainRegistration struct {
	Domain      string
	SharedInbox string
}

// Lease identifies one owner's hold on one domain.
type Lease struct {
	Domain string
	// Token is the fencing token: it increases with every acquisition of the
	// domain, so a save carrying an older token is refused.
	Token     int64
	ExpiresAt time.Time
	// Revision is the domain's admin revision (see DomainState.Revision),
	// returned by RenewLeases so that the owner notices admin changes.
	Revision int64
	// SettledThrough, given to RenewLeases by the owner, says that every
	// activity addressed to the domain up to this ID is settled: the store
	// raises the domain's cursor to it (never lowers it). An owner sets it
	// for a domain with nothing pending, whose cursor would otherwise stay
	// where its last delivery left it while the log moves on; that would
	// hold retention back. Zero changes nothing.
	SettledThrough int64
}

// DomainState is the persistent state of one remote domain.
type DomainState struct {
	// Domain is host[:port], lower-case, IDNA-normalised.
	Domain string
	// SharedInbox is the domain's shared inbox URL, if known.
	SharedInbox string
	// Cursor is the highest ID at and below which every activity is settled
	// for this domain: delivered, or failed for good and recorded.
	Cursor int64
	Status DomainStatus
	// FailCount counts consecutive failed attempts since the last success.
	FailCount int
	// FailingSince is when the current run of failures began (zero when the
	// domain is healthy).
	FailingSince time.Time
	// NextAttemptAt is the earliest time of the next attempt (zero: now).
	NextAttemptAt time.Time
	// LastStatus is the HTTP status of the last attempt (0: none or no
	// response).
	LastStatus int
	// LastError is the reason of the last failure, empty after a success.
	LastError string
	// LastSuccessAt is when the domain last accepted a delivery.
	LastSuccessAt time.Time
	// Progress is what the owner settled above Cursor and the retry state of
	// the deliveries it attempted there, saved by Checkpoint with the rest
	// of the state, so that the next owner (after a graceful stop, a lease
	// handover or an admin reload) re-sends nothing and counts attempts on.
	// Nil when there is none. Stores save and return it as given; entries
	// at or below Cursor mean nothing.
	Progress *Progress
	// SignatureScheme is the HTTP signature scheme the domain accepted
	// ("cavage" or "rfc9421", see signer.Scheme), "" while unknown. Saved by
	// Checkpoint, so every process and every restart signs with it first.
	SignatureScheme string
	// SignatureCheckedAt is when the domain last refused the preferred
	// scheme and accepted SignatureScheme instead; the preferred scheme is
	// tried again once it is older than the sender's re-check interval.
	SignatureCheckedAt time.Time
	// Revision counts the admin changes made to the domain (ChangeDomain).
	// Checkpoint refuses a state based on an older revision, so an owner
	// that has not seen an admin change yet cannot undo it.
	Revision int64

	// Owner, LeaseToken and LeaseExpiresAt describe the domain's lease. They
	// are set by AcquireLeases and RenewLeases only; Checkpoint uses Owner and
	// LeaseToken as its fencing check.
	Owner          string
	LeaseToken     int64
	LeaseExpiresAt time.Time
}

// Progress is a domain's delivery progress above its cursor (see
// DomainState.Progress). Its size is bounded by the queue's run-ahead
// bound: at most one range and one delivery per pending delivery.
type Progress struct {
	// Settled are ranges of activity IDs above the cursor whose deliveries
	// to the domain are all settled, in ascending order.
	Settled []IDRange `json:"settled,omitempty"`
	// Deliveries are the deliveries above the cursor that were attempted
	// and are not settled, or are settled while another delivery of the same
	// activity is not, and every unsettled delivery of an activity in
	// OthersSettled, in ascending activity ID order.
	Deliveries []DeliveryProgress `json:"deliveries,omitempty"`
	// OthersSettled are activities above the cursor, in ascending order,
	// whose deliveries to the domain are all settled but the ones
	// Deliveries lists unsettled for them (untried ones included): their
	// settled inboxes are not listed, so that the progress of an activity
	// with many inboxes on the domain is as small as what is left of it.
	// An inbox the activity has on the domain for a later owner and not
	// for the one that saved this (a new follower) counts as settled too,
	// but for the domain's shared inbox when it replaces the listed ones.
	// A release that does not know the field sends those inboxes again: a
	// re-send, never a loss.
	OthersSettled []int64 `json:"others_settled,omitempty"`
}

// IDRange is the activity IDs from First to Last, both included.
type IDRange struct {
	First int64 `json:"first"`
	Last  int64 `json:"last"`
}

// DeliveryProgress is the state of one delivery (an activity to one inbox).
type DeliveryProgress struct {
	ActivityID int64  `json:"activity_id"`
	Inbox      string `json:"inbox"`
	Settled    bool   `json:"settled,omitempty"`
	// Attempts counts the attempts made, by every owner.
	Attempts int `json:"attempts,omitempty"`
	// NextAttemptAt is when the delivery may be tried again.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
}

// Clone returns a deep copy of p (nil for nil).
func (p *Progress) Clone() *Progress {
	if p == nil {
		return nil
	}
	return &Progress{
		Settled:       append([]IDRange(nil), p.Settled...),
		Deliveries:    append([]DeliveryProgress(nil), p.Deliveries...),
		OthersSettled: append([]int64(nil), p.OthersSettled...),
	}
}

// Lease returns the lease fields of s as a Lease.
func (s DomainState) Lease() Lease {
	return Lease{Domain: s.Domain, Token: s.LeaseToken, ExpiresAt: s.LeaseExpiresAt, Revision: s.Revision}
}

// DomainChange is an admin's change to a domain's state. Zero fields change
// nothing.
type DomainChange struct {
	// Status, when set, becomes the domain's status: StatusPaused to pause,
	// StatusActive to resume or to mark a dead domain alive.
	Status DomainStatus
	// ClearBackoff forgets the failures: FailCount, FailingSince,
	// NextAttemptAt and LastError are reset, and so are the NextAttemptAt of
	// the deliveries in Progress, so the next attempt is now for an owner
	// that loads the domain afresh as for the one working it.
	ClearBackoff bool
	// SkipTo raises the cursor to this ID (never lowers it): the activities
	// up to it are not delivered to the domain.
	SkipTo int64
}

// LeaseStats summarises the leases of a store.
type LeaseStats struct {
	// Domains is the number of known domains.
	Domains int
	// Owners is the number of distinct live owners (see Store.LeaseStats).
	Owners int
}

// DeadLetter records a delivery that failed for good. It keeps a copy of the
// activity so that it can be inspected and re-enqueued after the log was
// pruned.
type DeadLetter struct {
	// ID is assigned by the store when the dead letter is recorded.
	ID          int64
	ActivityID  int64
	Domain      string
	Inbox       string
	Actor       string
	OrderingKey string
	Body        []byte
	// Status is the HTTP status of the last attempt (0: no response).
	Status int
	// Reason says why the delivery failed for good.
	Reason   string
	Attempts int
	// CreatedAt is when the dead letter was recorded.
	CreatedAt time.Time
}

// DeadLetterFilter selects dead letters. Zero fields match everything.
type DeadLetterFilter struct {
	// Domain keeps only dead letters for this domain.
	Domain string
	// IDs, when not nil, keeps only the dead letters with these IDs.
	IDs []int64
	// ActivityID, when not zero, keeps only the dead letters of this
	// activity: a store reads them through an index, at a cost that
	// follows the activity's dead letters, not the table's size.
	ActivityID int64
	// AfterID keeps only dead letters with an ID greater than this, for paging.
	AfterID int64
	// Limit caps the number returned; zero means 100.
	Limit int
}

// DeadLetterLimitDefault is the number of dead letters returned when a
// DeadLetterFilter has no Limit.
const DeadLetterLimitDefault = 100

// PruneResult reports what Prune did.
type PruneResult struct {
	// Below is the ID at and below which activities were deleted.
	Below int64
	// Deleted is the number of activities deleted.
	Deleted int64
	// FastForwarded lists dead domains whose cursor was moved up to Below.
	FastForwarded []FastForward
	// ExpiredKeys is the number of expired idempotency keys deleted.
	ExpiredKeys int64
}

// FastForward records a dead domain whose cursor Prune moved.
type FastForward struct {
	Domain string
	// From is the cursor before; the activities in (From, To] were never
	// delivered to the domain.
	From int64
	To   int64
}

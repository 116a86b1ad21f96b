package memory

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/apqueue/apqueue/store"
)

// Store is a goroutine-safe, in-memory store.Store. Its zero value is not
// usable; create one with New or NewWithClock.
type Store struct {
	now func() time.Time

	mu sync.Mutex
	// log holds the activities not yet pruned, in ID order.
	log []store.Activity
	// head is the highest ID ever assigned; IDs are never reused.
	head        int64
	domains     map[string]*store.DomainState
	deadLetters []store.DeadLetter
	deadKeys    map[deliveryKey]bool // the deliveries deadLetters record
	lastDeadID  int64
	listeners   map[*listener]struct{}
	// owners maps an owner to the end of its liveness from its last lease
	// call, for LeaseStats.
	owners map[string]time.Time
	// keys are the idempotency keys remembered, until Prune deletes them
	// once expired.
	keys map[string]idempotencyKey
	// forgottenTokens are the last lease tokens of forgotten domains, from
	// which their tokens go on if they are registered again.
	forgottenTokens map[string]int64
	// marks are the owners' change marks (see store.LeaseKeeper), from
	// markSeq, which only grows, so a mark is never given twice.
	marks   map[string]int64
	markSeq int64
	// follows maps an owner to the leases that KeepLeases renews without
	// their being listed, with their tokens.
	follows map[string]map[string]int64
}

var (
	_ store.Store            = (*Store)(nil)
	_ store.DeadLetterPruner = (*Store)(nil)
)

// New returns an empty store that tells the time with the system clock.
func New() *Store {
	return NewWithClock(time.Now)
}

// NewWithClock returns an empty store that tells the time with now, so that
// lease expiry and timestamps can be driven by a fake clock in tests.
func NewWithClock(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{
		now:       now,
		domains:   make(map[string]*store.DomainState),
		deadKeys:  make(map[deliveryKey]bool),
		listeners: make(map[*listener]struct{}),
		keys:      make(map[string]idempotencyKey),

		forgottenTokens: make(map[string]int64),
	}
}

// timeNow returns the current time at the microsecond precision PostgreSQL
// keeps, so that the two stores round-trip times alike.
func (s *Store) timeNow() time.Time {
	return truncate(s.now())
}

// truncate drops the monotonic reading and everything below a microsecond.
// The zero time stays zero.
func truncate(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).Truncate(time.Microsecond).UTC()
}

// checkCtx returns an error wrapping ctx.Err() when ctx has ended, so that a
// call made with an ended context fails even though nothing here blocks.
func checkCtx(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: %s: %w", op, err)
	}
	return nil
}

// refused says which call refused its arguments (err matches
// store.ErrInvalid).
func refused(op string, err error) error {
	return fmt.Errorf("memory: %s: %w", op, err)
}

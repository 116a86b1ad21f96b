package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/memory"
)

// keepRecorder is a memory store that records every KeepLeases call.
type keepRecorder struct {
	*memory.Store
	mu    sync.Mutex
	calls []store.LeaseKeep
}

func (s *keepRecorder) KeepLeases(ctx context.Context, owner string, keep store.LeaseKeep, ttl time.Duration) (store.LeaseKept, error) {
	s.mu.Lock()
	s.calls = append(s.calls, keep)
	s.mu.Unlock()
	return s.Store.KeepLeases(ctx, owner, keep, ttl)
}

// since returns the calls made from the n-th on.
func (s *keepRecorder) since(n int) []store.LeaseKeep {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]store.LeaseKeep(nil), s.calls[min(n, len(s.calls)):]...)
}

// workerOf returns the queue's worker of dom, or nil.
func workerOf(q *Queue, dom string) *worker {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.workers[dom]
}

// idleQueue starts a queue on st that works the n domains d0.example…,
// with a short lease so that renewals come every 50 ms, and waits until it
// works them all and has renewed them at least once.
func idleQueue(t *testing.T, st *keepRecorder, n int) *Queue {
	t.Helper()
	var domains []string
	for i := range n {
		domains = append(domains, fmt.Sprintf("d%d.example", i))
	}
	require.NoError(t, st.RegisterDomains(context.Background(), registrations(domains)))
	cfg := testConfig()
	cfg.LeaseTTL = 150 * time.Millisecond
	q := startQueue(t, st, &sendertest.Fake{}, cfg)
	eventually(t, func() bool { return q.workerCount() == n }, "the queue works every domain")
	start := len(st.since(0))
	eventually(t, func() bool { return len(st.since(start)) > 0 }, "a renewal")
	return q
}

func registrations(domains []string) []store.DomainRegistration {
	out := make([]store.DomainRegistration, len(domains))
	for i, d := range domains {
		out[i] = store.DomainRegistration{Domain: d}
	}
	return out
}

func TestIdleRenewalsListNoLease(t *testing.T) {
	t.Parallel()
	st := &keepRecorder{Store: newMemory()}
	const n = 50
	q := idleQueue(t, st, n)
	first := st.since(0)
	require.True(t, first[0].Full, "the first renewal looks at the whole list")
	for _, c := range renewalsWhileHeld(t, q, st, n) {
		require.False(t, c.Full, "an idle renewal looked at the whole list")
		require.Empty(t, c.Leases, "an idle renewal listed leases")
	}
}

// renewalsWhileHeld returns three renewals in a row during which q kept
// the leases of its n idle domains d0.example… with the same workers. A
// lease that expires meanwhile (a renewal more than 100 ms late on a
// stalled machine) drops its worker, which makes the next renewal Full,
// and is acquired again with a new token, rightly listed as new: such a
// window proves nothing, and is watched again.
func renewalsWhileHeld(t *testing.T, q *Queue, st *keepRecorder, n int) []store.LeaseKeep {
	t.Helper()
	holders := func() (tokens []int64, workers []*worker) {
		for i := range n {
			d := fmt.Sprintf("d%d.example", i)
			tokens = append(tokens, domainState(t, st, d).LeaseToken)
			workers = append(workers, workerOf(q, d))
		}
		return tokens, workers
	}
	for window := 1; ; window++ {
		tokens, workers := holders()
		start := len(st.since(0))
		eventually(t, func() bool { return len(st.since(start)) >= 3 }, "three more renewals")
		calls := st.since(start)
		if after, still := holders(); slices.Equal(after, tokens) && slices.Equal(still, workers) {
			return calls
		}
		require.Less(t, window, 10, "a lease lost in every window of three renewals")
	}
}

func TestAdminChangeFromAnotherProcessReachesAnIdleWorker(t *testing.T) {
	t.Parallel()
	st := &keepRecorder{Store: newMemory()}
	q := idleQueue(t, st, 3)
	// Another process pauses the domain: only the store knows.
	_, err := st.ChangeDomain(context.Background(), "d1.example", store.DomainChange{Status: store.StatusPaused})
	require.NoError(t, err)
	// The worker is looked up each time: a lease that lapsed on a stalled
	// machine gives the domain a new one.
	eventually(t, func() bool {
		w := workerOf(q, "d1.example")
		return w != nil && w.snapshot().Status == store.StatusPaused
	}, "the worker takes the pause in")
	for _, d := range []string{"d0.example", "d2.example"} {
		if w := workerOf(q, d); w != nil {
			require.Equal(t, store.StatusActive, w.snapshot().Status)
		}
	}
}

func TestDomainForgottenByAnotherProcessStopsItsWorker(t *testing.T) {
	t.Parallel()
	st := &keepRecorder{Store: newMemory()}
	q := idleQueue(t, st, 3)
	w := workerOf(q, "d1.example")
	require.NotNil(t, w)
	require.NoError(t, st.ForgetDomain(context.Background(), "d1.example"))
	eventually(t, func() bool { return w.ctx.Err() != nil && workerOf(q, "d1.example") == nil }, "the worker of the forgotten domain ends")
	require.Equal(t, 2, q.workerCount())
}

// failReleaseStore fails every release, as a database out of reach would.
type failReleaseStore struct{ *keepRecorder }

func (s failReleaseStore) ReleaseLeases(ctx context.Context, owner string, leases []store.Lease) error {
	return errors.New("database unreachable")
}

func TestLeaseFollowingAProcessEndsWhenItsReleaseFails(t *testing.T) {
	// A process gives a domain up for a newcomer and its release fails:
	// the lease, renewed so far with the process, must still end, or the
	// domain would never be worked again.
	t.Parallel()
	mem := newMemory()
	st := failReleaseStore{&keepRecorder{Store: mem}}
	require.NoError(t, mem.RegisterDomains(context.Background(), registrations([]string{"a.example", "b.example", "c.example", "d.example"})))
	cfg := testConfig()
	cfg.LeaseTTL, cfg.OwnerID = 150*time.Millisecond, "p1"
	q1, err := New(st, &sendertest.Fake{}, cfg)
	require.NoError(t, err)
	require.NoError(t, q1.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Its last release fails too, as the store is made to.
		require.ErrorContains(t, q1.Stop(ctx), "database unreachable")
	})
	eventually(t, func() bool { return q1.workerCount() == 4 }, "the first process works every domain")
	start := len(st.since(0))
	eventually(t, func() bool { return len(st.since(start)) > 0 }, "a renewal")

	cfg2 := testConfig()
	cfg2.LeaseTTL, cfg2.OwnerID = 150*time.Millisecond, "p2"
	q2 := startQueue(t, mem, &sendertest.Fake{}, cfg2)
	eventually(t, func() bool { return q1.workerCount() == 2 && q2.workerCount() == 2 }, "the domains given up reach the newcomer")
}

func TestIdleDomainCursorFollowsTheLogThroughRenewals(t *testing.T) {
	// A domain that nothing addresses is settled through the log's head:
	// a renewal lists it to raise its cursor (so it does not hold
	// retention back), and lists it again only when the head moves on.
	t.Parallel()
	st := &keepRecorder{Store: newMemory()}
	q := idleQueue(t, st, 2)
	ids := enqueueAll(t, q, note(1, "https://d0.example/inbox"), note(2, "https://d0.example/inbox"))
	last := ids[len(ids)-1]
	eventually(t, func() bool { return domainState(t, st, "d1.example").Cursor == last }, "the idle domain's cursor reaches the head")
	eventually(t, func() bool { return domainState(t, st, "d0.example").Cursor == last }, "the busy domain delivers")
	// The busy domain, idle now, is listed once more to be settled
	// through the head; then renewals list nothing.
	start := len(st.since(0))
	eventually(t, func() bool {
		calls := st.since(start)
		return len(calls) > 0 && len(calls[len(calls)-1].Leases) == 0
	}, "a renewal listing nothing")
	// Three renewals during which the process kept both leases, with the
	// same workers, must list nothing.
	calls := renewalsWhileHeld(t, q, st, 2)
	for _, c := range calls {
		require.False(t, c.Full)
		require.Empty(t, c.Leases, "a renewal listed a domain whose cursor had followed the head already")
	}
}

// failKeepStore refuses every KeepLeases call once fail is set, as a
// database out of reach would.
type failKeepStore struct {
	*memory.Store
	fail chan struct{} // closed: refuse
	kept *atomic.Int32 // calls that succeeded
}

func (s failKeepStore) KeepLeases(ctx context.Context, owner string, keep store.LeaseKeep, ttl time.Duration) (store.LeaseKept, error) {
	select {
	case <-s.fail:
		return store.LeaseKept{}, errors.New("database unreachable")
	default:
		res, err := s.Store.KeepLeases(ctx, owner, keep, ttl)
		if err == nil {
			s.kept.Add(1)
		}
		return res, err
	}
}

func TestRequestsEndWithALeaseKeptWithTheProcess(t *testing.T) {
	// A lease that follows the process has no timer of its own: the
	// keeper's must end the worker's requests when renewals fail, before
	// another process may take the domain.
	t.Parallel()
	mem := newMemory()
	st := failKeepStore{Store: mem, fail: make(chan struct{}), kept: new(atomic.Int32)}
	first := make(chan struct{})
	var once sync.Once
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Domain == "a.example" {
			once.Do(func() { close(first) })
			<-ctx.Done() // a slow inbox, until the request is cancelled
			return sender.Result{Outcome: sender.Retry, DomainLevel: true, Reason: ctx.Err().Error()}
		}
		return sender.Success(202)
	}}
	cfg := testConfig()
	cfg.LeaseTTL, cfg.MaxInFlightPerDomain, cfg.OwnerID = 300*time.Millisecond, 1, "p1"
	q1 := startQueue(t, st, fake, cfg)
	enqueueAll(t, q1, note(1, "https://a.example/inbox"))
	<-first
	w := workerOf(q1, "a.example")
	require.NotNil(t, w)
	// The worker's lease was listed right after its acquisition; one
	// more renewal, and it is renewed with the process.
	calls := st.kept.Load()
	eventually(t, func() bool { return st.kept.Load() > calls }, "a renewal")
	close(st.fail)
	eventually(t, func() bool { return w.ctx.Err() != nil }, "the request ends with the lease")
	require.Zero(t, q1.workerCount())
}

// followingStore fails KeepLeases while failing is set, and renews the
// leases that follow an owner on each of its AcquireLeases calls too, as
// the PostgreSQL store's heartbeat does.
type followingStore struct {
	*memory.Store
	failing atomic.Bool
	kept    atomic.Int32 // KeepLeases calls that succeeded
}

func (s *followingStore) KeepLeases(ctx context.Context, owner string, keep store.LeaseKeep, ttl time.Duration) (store.LeaseKept, error) {
	if s.failing.Load() {
		return store.LeaseKept{}, errors.New("database unreachable")
	}
	res, err := s.Store.KeepLeases(ctx, owner, keep, ttl)
	if err == nil {
		s.kept.Add(1)
	}
	return res, err
}

func (s *followingStore) AcquireLeases(ctx context.Context, owner string, ttl time.Duration, limit int) ([]store.DomainState, error) {
	if _, err := s.Store.KeepLeases(ctx, owner, store.LeaseKeep{}, ttl); err != nil {
		return nil, err
	}
	return s.Store.AcquireLeases(ctx, owner, ttl, limit)
}

// TestDomainsReturnAfterEveryLeaseExpired fails the renewals until the
// process has dropped every worker: once the store answers again, the
// process must let the leases that follow it go and take its domains
// again. With no worker left, no renewal was made, and the process's own
// acquisitions kept the leases alive for it in the store: it never worked
// the domains again.
func TestDomainsReturnAfterEveryLeaseExpired(t *testing.T) {
	t.Parallel()
	st := &followingStore{Store: newMemory()}
	fake := &sendertest.Fake{}
	cfg := testConfig()
	cfg.LeaseTTL, cfg.OwnerID = 300*time.Millisecond, "p1"
	q := startQueue(t, st, fake, cfg)
	ids := enqueueAll(t, q, note(1, "https://a.example/inbox"), note(2, "https://b.example/inbox"))
	eventually(t, func() bool { return fake.DeliveredCount() == 2 }, "delivered before the outage")
	// Two renewals after the deliveries (the first lists the leases): they
	// follow the process.
	calls := st.kept.Load()
	eventually(t, func() bool { return st.kept.Load() >= calls+2 }, "two renewals")

	st.failing.Store(true)
	eventually(t, func() bool { return q.workerCount() == 0 }, "the workers end with their leases")
	st.failing.Store(false)

	ids = append(ids, enqueueAll(t, q, note(3, "https://a.example/inbox"), note(4, "https://b.example/inbox"))...)
	eventually(t, func() bool {
		return slices.Contains(fake.Delivered("https://a.example/inbox"), ids[2]) &&
			slices.Contains(fake.Delivered("https://b.example/inbox"), ids[3])
	}, "the domains were not worked again after the outage")
}

// flakyKeepStore refuses the next fail renewals, as a database does for a
// moment (a failover, a connection reset), and counts in after those that
// succeed once they are all refused.
type flakyKeepStore struct {
	*memory.Store
	fail, after atomic.Int32
}

func (s *flakyKeepStore) KeepLeases(ctx context.Context, owner string, keep store.LeaseKeep, ttl time.Duration) (store.LeaseKept, error) {
	if s.fail.Add(-1) >= 0 {
		return store.LeaseKept{}, errors.New("connection reset by peer")
	}
	res, err := s.Store.KeepLeases(ctx, owner, keep, ttl)
	if err == nil && s.fail.Load() < 0 {
		s.after.Add(1)
	}
	return res, err
}

// TestFailedRenewalsAreRetriedWithinTheLease fails three renewals in a
// row: they are tried again within milliseconds, not at the next tick a
// third of the lease later, so the worker never loses its lease. Waiting
// for the ticks, the third failure came after the worker's hold ended.
func TestFailedRenewalsAreRetriedWithinTheLease(t *testing.T) {
	t.Parallel()
	st := &flakyKeepStore{Store: newMemory()}
	cfg := testConfig() // LeaseTTL 3 s: a renewal every second
	q := startQueue(t, st, &sendertest.Fake{}, cfg)
	require.NoError(t, q.AddDomains(t.Context(), "a.example"))
	eventually(t, func() bool { return q.workerCount() == 1 }, "a worker for the domain")
	first := q.workerList()[0]

	st.fail.Store(3)
	st.after.Store(0) // a call counted before the failures were armed
	eventually(t, func() bool { return st.after.Load() > 0 }, "a renewal after the three failures")
	now := q.workerList()
	require.True(t, len(now) == 1 && now[0] == first, "the worker lost its lease")
	require.NoError(t, first.ctx.Err(), "the worker lost its lease")
}

package queue

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

// losingStore reports every lease as lost on renewal once lose is set, as a
// store does after another process took the domains over.
type losingStore struct {
	store.Store
	lose atomic.Bool
}

func (s *losingStore) RenewLeases(ctx context.Context, owner string, leases []store.Lease, ttl time.Duration) ([]store.Lease, error) {
	if s.lose.Load() {
		return nil, nil
	}
	return s.Store.RenewLeases(ctx, owner, leases, ttl)
}

func TestLostLeaseStopsTheWorkerAtOnce(t *testing.T) {
	t.Parallel()
	st := &losingStore{Store: newMemory()}
	inFlight := make(chan struct{}, 1)
	var cancelled atomic.Bool
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		inFlight <- struct{}{}
		<-ctx.Done()
		cancelled.Store(true)
		return sender.Result{Outcome: sender.Retry, Reason: "cancelled"}
	}}
	cfg := testConfig()
	// The loss shows at the next renewal (within a third of the TTL), and
	// the store gives the domain out again only once the TTL has passed
	// since the last renewal: the test looks in between.
	cfg.LeaseTTL = time.Second
	cfg.MaxInFlightPerDomain = 1
	q := startQueue(t, st, fake, cfg)
	enqueueAll(t, q, note(1, "https://a.example/inbox"), note(2, "https://a.example/inbox"))
	<-inFlight
	st.lose.Store(true)
	eventually(t, func() bool { return q.workerCount() == 0 && cancelled.Load() }, "the worker is dropped and its request cancelled")
	require.Len(t, fake.Calls(), 1, "nothing more is sent for a lost domain")
	select {
	case <-inFlight:
		t.Fatal("a request was sent after the lease was lost")
	default:
	}
}

func TestWorkerHoldsBackWhenItsLeaseMayHaveExpired(t *testing.T) {
	t.Parallel()
	fake := &sendertest.Fake{}
	cfg := testConfig()
	q, err := New(newMemory(), fake, cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q.workCtx = ctx
	ids, err := q.EnqueueMany(ctx, []Activity{note(1, "https://a.example/inbox")})
	require.NoError(t, err)
	st := store.DomainState{Domain: "a.example", Cursor: ids[0] - 1, Status: store.StatusActive}
	q.window.init(ctx)
	w := newWorker(q, ctx, st, time.Now().Add(-time.Second), q.domainLimit(st.Domain)) // renewal overdue
	w.scanned = 0
	w.fill()
	w.dispatch()
	require.Zero(t, w.inflight, "no request while the lease may belong to someone else")
	w.renewed(time.Now().Add(time.Minute))
	w.dispatch()
	require.Equal(t, 1, w.inflight)
	r := <-w.results
	w.handle(r)
	require.Equal(t, 1, fake.DeliveredCount())
}

func TestTwoQueuesNeverWorkOneDomainAtOnce(t *testing.T) {
	t.Parallel()
	st := newMemory()
	var mu sync.Mutex
	owner := map[string]string{} // domain -> queue with a request in flight
	var overlaps []string
	handler := func(name string) func(ctx context.Context, d *sender.Delivery) sender.Result {
		return func(ctx context.Context, d *sender.Delivery) sender.Result {
			mu.Lock()
			if o, ok := owner[d.Domain]; ok && o != name {
				overlaps = append(overlaps, fmt.Sprintf("%s worked by %s and %s", d.Domain, o, name))
			}
			owner[d.Domain] = name
			mu.Unlock()
			time.Sleep(time.Millisecond) // simulated latency, so overlap would show
			mu.Lock()
			if owner[d.Domain] == name {
				delete(owner, d.Domain)
			}
			mu.Unlock()
			return sender.Success(202)
		}
	}
	fakeA := &sendertest.Fake{Handler: handler("a")}
	fakeB := &sendertest.Fake{Handler: handler("b")}
	cfg := func(id string) *Config {
		c := testConfig()
		c.OwnerID = id
		c.LeaseTTL = 200 * time.Millisecond
		c.MaxInFlightPerDomain = 1
		return c
	}
	var domains []string
	for i := range 20 {
		domains = append(domains, fmt.Sprintf("d%d.example", i))
	}
	q0, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	require.NoError(t, q0.AddDomains(context.Background(), domains...))
	qa := startQueue(t, st, fakeA, cfg("a"))
	eventually(t, func() bool { return qa.workerCount() == 20 }, "the first process takes every domain")
	qb := startQueue(t, st, fakeB, cfg("b"))
	eventually(t, func() bool { return qa.workerCount() == 10 && qb.workerCount() == 10 }, "a second process gets half, without configuration")
	tokens := func() map[string]int64 {
		states, err := st.Domains(context.Background(), nil)
		require.NoError(t, err)
		m := make(map[string]int64, len(states))
		for _, s := range states {
			m[s.Domain] = s.LeaseToken
		}
		return m
	}
	split := tokens()

	var acts []Activity
	for i := range 200 {
		acts = append(acts, note(i, fmt.Sprintf("https://d%d.example/inbox", i%20)))
	}
	ids := enqueueAll(t, qa, acts[:100]...)
	ids = append(ids, enqueueAll(t, qb, acts[100:]...)...)
	eventually(t, func() bool {
		states, err := st.Domains(context.Background(), nil)
		require.NoError(t, err)
		done := 0
		for _, s := range states {
			if s.Cursor == ids[len(ids)-1] {
				done++
			}
		}
		return done == 20
	}, "every domain delivered")
	require.Empty(t, overlaps)
	// A lease that expires unrenewed (200 ms: a stalled machine) passes
	// its domain on from the saved cursor, and what was sent since the
	// last checkpoint is sent again: at least once. Only there.
	after := tokens()
	sent := map[string]map[int64]int{}
	for _, c := range append(fakeA.Calls(), fakeB.Calls()...) {
		if c.Result.Outcome != sender.Delivered {
			continue
		}
		if sent[c.Domain] == nil {
			sent[c.Domain] = map[int64]int{}
		}
		sent[c.Domain][c.ActivityID]++
	}
	for _, d := range domains {
		require.Len(t, sent[d], 10, "%s: every activity sent", d)
		if after[d] != split[d] {
			t.Logf("%s: lease taken again during the deliveries", d)
			continue
		}
		for id, n := range sent[d] {
			require.Equal(t, 1, n, "%s: activity %d sent twice while its lease was kept", d, id)
		}
	}
	require.Positive(t, fakeA.DeliveredCount())
	require.Positive(t, fakeB.DeliveredCount(), "both processes share the work")

	// When one process dies, the other takes its domains over.
	qa.kill()
	more := enqueueAll(t, qb, note(1000, "https://d1.example/inbox"), note(1001, "https://d2.example/inbox"), note(1002, "https://d3.example/inbox"))
	eventually(t, func() bool {
		for _, d := range []string{"d1.example", "d2.example", "d3.example"} {
			if domainState(t, st, d).Cursor < more[2] {
				return false
			}
		}
		return true
	}, "orphaned domains taken over within the lease TTL")
	eventually(t, func() bool { return qb.workerCount() == 20 }, "the survivor works every domain")
}

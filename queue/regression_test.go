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

	"github.com/apqueue/apqueue/internal/clock"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

// These tests pin down bugs found in review: each failed before its fix.

func deadLetterCount(t *testing.T, st store.Store, dom string) int {
	t.Helper()
	dls, err := st.DeadLetters(context.Background(), storeFilter(dom))
	require.NoError(t, err)
	return len(dls)
}

func TestRestartedQueueDeliversWhatWasEnqueuedWhileStopped(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	cfg := testConfig()
	cfg.ReadBatch, cfg.WindowSize = 4, 8
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, q.Start(ctx))
	var acts []Activity
	for i := range 8 {
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	eventually(t, func() bool { return fake.DeliveredCount() == 8 }, "a delivered")
	require.NoError(t, q.Stop(ctx))

	acts = nil
	for i := range 4 {
		acts = append(acts, note(100+i, "https://b.example/inbox"))
	}
	enqueueAll(t, q, acts...) // while stopped
	held, err := st.AcquireLeases(ctx, "other", time.Minute, 10)
	require.NoError(t, err)
	require.NoError(t, q.Start(ctx))
	t.Cleanup(func() { _ = q.Stop(ctx) })
	acts = nil
	for i := range 8 {
		acts = append(acts, note(200+i, "https://c.example/inbox"))
	}
	enqueueAll(t, q, acts...) // pushes the window past the restart point
	eventually(t, func() bool { return len(fake.Delivered("https://c.example/inbox")) == 8 }, "c delivered")
	leases := make([]store.Lease, len(held))
	for i, s := range held {
		leases[i] = s.Lease()
	}
	require.NoError(t, st.ReleaseLeases(ctx, "other", leases))
	q.leases.kick()
	eventually(t, func() bool { return len(fake.Delivered("https://b.example/inbox")) == 4 }, "activities enqueued while stopped reach b")
	require.Zero(t, deadLetterCount(t, st, "b.example"))
}

func TestCrashResendsAtMostWhatSettledSinceTheLastCheckpoint(t *testing.T) {
	t.Parallel()
	st := newMemory()
	var stuck atomic.Int64
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Activity.ID == stuck.Load() {
			return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500"}
		}
		return sender.Success(202)
	}}
	cfg := testConfig()
	cfg.ReadBatch, cfg.WindowSize = 16, 32
	cfg.MaxPendingPerDomain = 16
	cfg.MaxAttempts = 1 << 30 // never give up on it
	cfg.MaxInFlightPerDomain = 4
	// Checkpoints only every 5 settled deliveries: the crash below loses at
	// most what settled since the last one.
	cfg.CheckpointInterval = time.Hour
	cfg.CheckpointDeliveries = 5
	cfg.LeaseTTL = 300 * time.Millisecond
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	ctx := context.Background()
	var acts []Activity
	for i := range 401 {
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	ids, err := q.EnqueueMany(ctx, acts)
	require.NoError(t, err)
	stuck.Store(ids[0])
	require.NoError(t, q.Start(ctx))
	eventually(t, func() bool { return fake.DeliveredCount() >= 2*cfg.MaxPendingPerDomain }, "the worker runs ahead of its cursor, past MaxPendingPerDomain settled deliveries")
	w := q.workerList()[0]
	pending := w.snapshot().Pending
	require.LessOrEqual(t, pending, cfg.MaxPendingPerDomain)
	q.kill()

	second := &sendertest.Fake{}
	next := *cfg
	next.CheckpointInterval = testConfig().CheckpointInterval
	startQueue(t, st, second, &next)
	eventually(t, func() bool { return domainState(t, st, "a.example").Cursor == ids[400] }, "the next owner delivers everything")
	resent := 0
	for _, id := range fake.Delivered("https://a.example/inbox") {
		if slices.Contains(second.Delivered("https://a.example/inbox"), id) {
			resent++
		}
	}
	// A worker stops dispatching once CheckpointDeliveries settled without
	// being saved; what was in flight then may settle too.
	require.LessOrEqual(t, resent, cfg.CheckpointDeliveries+cfg.MaxInFlightPerDomain,
		"after a crash, re-sends are bounded by what settled since the last checkpoint (plus what was in flight)")
}

// slowCheckpoints is a store whose checkpoints wait until let is closed.
type slowCheckpoints struct {
	store.Store
	let chan struct{}
}

func (s *slowCheckpoints) Checkpoint(ctx context.Context, states []store.DomainState, dls []store.DeadLetter) error {
	select {
	case <-s.let:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.Checkpoint(ctx, states, dls)
}

// TestASlowCheckpointHoldsDeliveriesBack checks that the re-send bound after
// a crash holds however slow the saves are: a domain that has settled
// CheckpointDeliveries deliveries since its last saved state sends nothing
// more until that state is saved.
func TestASlowCheckpointHoldsDeliveriesBack(t *testing.T) {
	t.Parallel()
	st := &slowCheckpoints{Store: newMemory(), let: make(chan struct{})}
	fake := &sendertest.Fake{}
	cfg := testConfig()
	cfg.CheckpointInterval = time.Hour
	cfg.CheckpointDeliveries = 5
	cfg.MaxInFlightPerDomain = 4
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	ctx := context.Background()
	var acts []Activity
	for i := range 50 {
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	ids, err := q.EnqueueMany(ctx, acts)
	require.NoError(t, err)
	require.NoError(t, q.Start(ctx))
	var letOnce sync.Once
	let := func() { letOnce.Do(func() { close(st.let) }) }
	t.Cleanup(func() {
		let()
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = q.Stop(stopCtx)
	})
	eventually(t, func() bool {
		ws := q.workerList()
		return len(ws) == 1 && ws[0].saveWait.Load()
	}, "the worker did not wait for its checkpoint")
	require.LessOrEqual(t, fake.DeliveredCount(), cfg.CheckpointDeliveries+cfg.MaxInFlightPerDomain,
		"deliveries went on while their checkpoint was not saved")
	let()
	eventually(t, func() bool { return domainState(t, st, "a.example").Cursor == ids[len(ids)-1] }, "the domain did not deliver everything once saves went through")
}

func TestNoDeadLetterWhileTheWholeDomainIsDown(t *testing.T) {
	t.Parallel()
	st := newMemory()
	okDone := make(chan struct{})
	var down atomic.Bool
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Activity.ID == 2 && !down.Load() {
			defer func() { down.Store(true); close(okDone) }()
			return sender.Success(202)
		}
		if d.Activity.ID == 1 && d.Attempt == 1 {
			<-okDone // a success comes in after this delivery's first attempt
		}
		return sender.Result{Outcome: sender.Retry, DomainLevel: true, Reason: "connection refused"}
	}}
	cfg := testConfig()
	cfg.MaxAttempts = 3
	cfg.BackoffMin, cfg.BackoffMax = time.Millisecond, 2*time.Millisecond
	q := startQueue(t, st, fake, cfg)
	enqueueAll(t, q, note(1, "https://a.example/inbox"), note(2, "https://a.example/inbox"))
	eventually(t, func() bool { return len(fake.Calls()) >= 10 }, "many attempts during the outage")
	require.Zero(t, deadLetterCount(t, st, "a.example"), "a domain that is down as a whole keeps its backlog")
}

func TestStopKeepsItsDeadlineWhileAResolverHangs(t *testing.T) {
	t.Parallel()
	st := newMemory()
	// The web process resolves the audience at enqueue; the delivering
	// process's Resolver hangs when it looks for the inboxes.
	enqueuer := webEnqueuer(t, st, "https://a.example/users/1/inbox")
	called := make(chan struct{}, 1)
	cfg := testConfig()
	cfg.PollInterval = 20 * time.Millisecond // the enqueue is another queue's: no wake-up may reach this one before it listens
	cfg.Resolver = ResolverFunc(func(ctx context.Context, aud string) ([]string, error) {
		select {
		case called <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	q, err := New(st, &sendertest.Fake{}, cfg)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, q.Start(ctx))
	enqueueAll(t, enqueuer, post(1))
	<-called
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.NoError(t, q.Stop(sctx))
	require.Less(t, time.Since(start), 10*time.Second, "Stop keeps its deadline (200 ms) instead of waiting for the Resolver")
}

func TestQueueWithoutResolverRecordsAudiencesItCannotResolve(t *testing.T) {
	t.Parallel()
	st := newMemory()
	ctx := context.Background()
	// Enqueued by a process that has a Resolver: the audience reaches a
	// domain with a known shared inbox and one without.
	enqueuer := webEnqueuer(t, st, "https://shared.example/users/1/inbox", "https://personal.example/users/1/inbox")
	require.NoError(t, enqueuer.SetSharedInbox(ctx, "https://shared.example/inbox"))
	ids := enqueueAll(t, enqueuer, post(1))

	fake := &sendertest.Fake{}
	startQueue(t, st, fake, testConfig()) // no Resolver
	eventually(t, func() bool { return len(fake.Delivered("https://shared.example/inbox")) == 1 }, "the shared inbox needs no Resolver")
	eventually(t, func() bool { return deadLetterCount(t, st, "personal.example") == 1 }, "the other domain is recorded, not skipped")
	dls, err := st.DeadLetters(ctx, storeFilter("personal.example"))
	require.NoError(t, err)
	require.Contains(t, dls[0].Reason, "no Config.Resolver")
	require.Equal(t, ids[0], dls[0].ActivityID)
	require.Len(t, fake.Calls(), 1)
}

// failRenewStore refuses every renewal, as a database out of reach would.
type failRenewStore struct{ store.Store }

func (s failRenewStore) RenewLeases(ctx context.Context, owner string, leases []store.Lease, ttl time.Duration) ([]store.Lease, error) {
	return nil, errors.New("database unreachable")
}

func TestRequestsEndWithTheLease(t *testing.T) {
	t.Parallel()
	mem := newMemory()
	var calls atomic.Int32
	first := make(chan struct{})
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if calls.Add(1) == 1 {
			close(first)
			select {
			case <-time.After(3 * time.Second): // a slow inbox
			case <-ctx.Done():
				// As the HTTP sender does: a cancelled request is no answer.
				return sender.Result{Outcome: sender.Retry, DomainLevel: true, Reason: ctx.Err().Error()}
			}
		}
		return sender.Success(202)
	}}
	cfg1 := testConfig()
	cfg1.LeaseTTL, cfg1.MaxInFlightPerDomain, cfg1.OwnerID = 300*time.Millisecond, 1, "p1"
	q1 := startQueue(t, failRenewStore{mem}, fake, cfg1)
	enqueueAll(t, q1, note(1, "https://a.example/inbox"))
	<-first
	cfg2 := testConfig()
	cfg2.LeaseTTL, cfg2.MaxInFlightPerDomain, cfg2.OwnerID = 300*time.Millisecond, 1, "p2"
	startQueue(t, mem, fake, cfg2)
	eventually(t, func() bool { return fake.DeliveredCount() >= 1 && calls.Load() >= 2 }, "the next owner delivers")
	require.Equal(t, 1, fake.MaxInFlight("a.example"), "the first owner's request ended with its lease")
}

func TestReleasingDomainsWhileCheckpointing(t *testing.T) {
	t.Parallel()
	mem := newMemory()
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		time.Sleep(time.Millisecond) // simulated latency
		return sender.Success(202)
	}}
	cfg := testConfig()
	cfg.LeaseTTL = 150 * time.Millisecond
	cfg.CheckpointInterval = time.Millisecond
	cfg.OwnerID = "p1"
	q1 := startQueue(t, mem, fake, cfg)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// The enqueuer stops however the test ends, a failed check included.
	defer wg.Wait()
	defer close(stop)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var acts []Activity
			for d := range 10 {
				acts = append(acts, note(i, fmt.Sprintf("https://d%d.example/inbox", d)))
			}
			_, _ = q1.EnqueueMany(context.Background(), acts)
			time.Sleep(time.Millisecond) // a steady enqueue rate
		}
	}()
	eventually(t, func() bool { return q1.workerCount() == 10 }, "10 domains")
	cfg2 := *cfg
	cfg2.OwnerID = "p2"
	q2 := startQueue(t, mem, fake, &cfg2)
	eventually(t, func() bool { return q1.workerCount() == 5 && q2.workerCount() == 5 }, "p1 handed half its domains to p2")
}

func TestStopSavesADomainChangedByAnotherProcess(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	cfg := testConfig()
	cfg.CheckpointInterval = time.Hour
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, q.Start(ctx))
	var acts []Activity
	for i := range 10 {
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	ids := enqueueAll(t, q, acts...)
	eventually(t, func() bool { return fake.DeliveredCount() == 10 }, "delivered")
	_, err = st.ChangeDomain(ctx, "a.example", store.DomainChange{ClearBackoff: true}) // an admin elsewhere
	require.NoError(t, err)
	require.NoError(t, q.Stop(ctx))
	require.Equal(t, ids[9], domainState(t, st, "a.example").Cursor, "the progress is saved with the change taken in")
}

// countingClock counts how often the worker looks at the time.
type countingClock struct {
	clock.Real
	n atomic.Int64
}

func (c *countingClock) Now() time.Time { c.n.Add(1); return time.Now() }

func TestDroppedWorkerWaitsWithoutSpinning(t *testing.T) {
	t.Parallel()
	st := newMemory()
	release := make(chan struct{})
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Domain == "a.example" {
			<-release // slow to notice the cancellation
		}
		return sender.Success(202)
	}}
	cfg := testConfig()
	clk := &countingClock{}
	cfg.clock = clk
	q := startQueue(t, st, fake, cfg)
	defer close(release)
	enqueueAll(t, q, note(1, "https://a.example/inbox"))
	eventually(t, func() bool { return len(q.workerList()) == 1 && q.workerList()[0].inflightNow() == 1 }, "request in flight")
	q.dropWorker("a.example", "test")
	enqueueAll(t, q, note(2, "https://b.example/inbox"))
	eventually(t, func() bool { return fake.DeliveredCount() == 1 }, "b delivered")
	before := clk.n.Load()
	time.Sleep(100 * time.Millisecond) // a window in which an idle queue reads the clock rarely
	require.Less(t, clk.n.Load()-before, int64(500), "the dropped worker busy-loops")
}

func TestPoisonActivityDoesNotHoldItsDomainBack(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Activity.ID == 1 {
			return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
		}
		return sender.Success(202)
	}}
	q := startQueue(t, st, fake, testConfig())
	enqueueAll(t, q, note(1, "https://a.example/inbox"))
	eventually(t, func() bool { return len(fake.Calls()) >= 3 }, "3 failures: the domain backs off")
	var acts []Activity
	for i := range 5 {
		acts = append(acts, note(10+i, "https://a.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	eventually(t, func() bool { return fake.DeliveredCount() == 5 }, "the activities behind the poison one are delivered")
	eventually(t, func() bool { return deadLetterCount(t, st, "a.example") == 1 }, "the poison one is dead-lettered once the domain proved healthy")
}

package queue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

func TestPauseAndResume(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	q := startQueue(t, st, fake, testConfig())
	ctx := context.Background()
	enqueueAll(t, q, note(1, "https://a.example/inbox"))
	eventually(t, func() bool { return fake.DeliveredCount() == 1 }, "delivered before the pause")

	require.NoError(t, q.Pause(ctx, "A.Example"))
	require.Equal(t, store.StatusPaused, q.workerList()[0].snapshot().Status, "the worker took the pause in before Pause returned")
	ids := enqueueAll(t, q, note(2, "https://a.example/inbox"), note(3, "https://b.example/inbox"))
	eventually(t, func() bool { return len(fake.Delivered("https://b.example/inbox")) == 1 }, "other domains go on")
	require.Len(t, fake.Delivered("https://a.example/inbox"), 1, "nothing sent to a paused domain")
	s := domainState(t, st, "a.example")
	require.Equal(t, store.StatusPaused, s.Status)
	require.Less(t, s.Cursor, ids[0])

	require.NoError(t, q.Resume(ctx, "a.example"))
	eventually(t, func() bool { return len(fake.Delivered("https://a.example/inbox")) == 2 }, "the backlog goes out after Resume")
	eventually(t, func() bool { return domainState(t, st, "a.example").Status == store.StatusActive }, "saved active")

	require.ErrorIs(t, q.Pause(ctx, "unknown.example"), store.ErrNotFound)
	require.Error(t, q.Pause(ctx, "bad host"))
}

func TestNothingEnqueuedAfterPauseReturnsIsSent(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	q := startQueue(t, st, fake, testConfig())
	ctx := context.Background()
	const a, b = "https://a.example/inbox", "https://b.example/inbox"
	enqueueAll(t, q, note(0, a))
	eventually(t, func() bool { return len(fake.Delivered(a)) == 1 }, "a.example worked")
	w := q.workerList()[0]
	// The worker is busy delivering to a.example when Pause comes: what is
	// enqueued once Pause has returned waits, every time.
	for i := range 50 {
		n := 1 + 2*i
		enqueueAll(t, q, note(n, a))
		require.NoError(t, q.Pause(ctx, "a.example"))
		enqueueAll(t, q, note(n+1, a), note(n+1, b))
		eventually(t, func() bool { return len(fake.Delivered(b)) == i+1 }, "b.example delivered")
		eventually(t, func() bool { return w.snapshot().Scanned >= int64(3+3*i) }, "a.example read what followed the pause")
		got := len(fake.Delivered(a))
		require.LessOrEqual(t, got, n+1, "round %d: the activity enqueued after Pause returned was sent to the paused domain", i)
		require.NoError(t, q.Resume(ctx, "a.example"))
		eventually(t, func() bool { return len(fake.Delivered(a)) == n+2 }, "delivered after Resume")
	}
}

// failAfterChangeStore, once armed, fails every Domains call that follows
// a ChangeDomain, as a store that cannot be read right after an admin
// change would.
type failAfterChangeStore struct {
	store.Store
	armed, failing atomic.Bool
}

func (s *failAfterChangeStore) ChangeDomain(ctx context.Context, dom string, change store.DomainChange) (store.DomainState, error) {
	st, err := s.Store.ChangeDomain(ctx, dom, change)
	if s.armed.Load() {
		s.failing.Store(true)
	}
	return st, err
}

func (s *failAfterChangeStore) Domains(ctx context.Context, domains []string) ([]store.DomainState, error) {
	if s.failing.Load() {
		return nil, errors.New("read refused")
	}
	return s.Store.Domains(ctx, domains)
}

func TestPauseTakesEffectWhenTheStoreCannotBeRead(t *testing.T) {
	t.Parallel()
	st := &failAfterChangeStore{Store: newMemory()}
	fake := &sendertest.Fake{}
	q := startQueue(t, st, fake, testConfig())
	ctx := context.Background()
	const a = "https://a.example/inbox"
	enqueueAll(t, q, note(1, a))
	eventually(t, func() bool { return len(fake.Delivered(a)) == 1 }, "a.example worked")
	w := q.workerList()[0]

	// The worker takes in the state the change returned: it need not read
	// the store, so a read that would fail changes nothing.
	st.armed.Store(true)
	require.NoError(t, q.Pause(ctx, "a.example"))
	require.Equal(t, store.StatusPaused, w.snapshot().Status, "the worker took the pause in before Pause returned")
	st.armed.Store(false)
	st.failing.Store(false)
	enqueueAll(t, q, note(2, a))
	require.NoError(t, q.Resume(ctx, "a.example"))
	require.Equal(t, store.StatusActive, w.snapshot().Status, "the worker took the resume in before Resume returned")
	eventually(t, func() bool { return len(fake.Delivered(a)) == 2 }, "delivered after Resume")
}

func TestAResolverMayChangeTheDomainItResolvesFor(t *testing.T) {
	t.Parallel()
	st := newMemory()
	// Enqueued by a web process; the delivering process's Resolver pauses
	// the domain it is asked about, on the worker's own goroutine.
	enqueuer := webEnqueuer(t, st, "https://a.example/users/1/inbox")
	var q *Queue
	paused := make(chan error, 1)
	cfg := testConfig()
	cfg.PollInterval = 20 * time.Millisecond // the enqueue is another queue's
	cfg.Resolver = ResolverFunc(func(ctx context.Context, aud string) ([]string, error) {
		select {
		case paused <- q.Pause(ctx, "a.example"):
		default:
		}
		return []string{"https://a.example/users/1/inbox"}, nil
	})
	fake := &sendertest.Fake{}
	q = startQueue(t, st, fake, cfg)
	enqueueAll(t, enqueuer, post(1))
	select {
	case err := <-paused:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Pause called from the Resolver did not return: it waits for the worker that waits for the Resolver")
	}
	eventually(t, func() bool { return domainState(t, st, "a.example").Status == store.StatusPaused }, "saved paused")
	w := q.workerList()[0]
	eventually(t, func() bool { return w.snapshot().Status == store.StatusPaused }, "the worker took the pause in")
	require.Zero(t, fake.DeliveredCount(), "the delivery being resolved was not sent to the domain its Resolver paused")
	require.NoError(t, q.Resume(context.Background(), "a.example"))
	eventually(t, func() bool { return fake.DeliveredCount() == 1 }, "delivered after Resume")
}

func TestASenderPausingItsDomainWaitsForTheWorker(t *testing.T) {
	t.Parallel()
	var (
		q     *Queue
		once  atomic.Bool
		after = make(chan store.DomainStatus, 1)
	)
	// A Sender that pauses the domain it sends to (say, on an answer that
	// asks it to) runs on its own goroutine: Pause may wait for the worker.
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if once.CompareAndSwap(false, true) {
			if err := q.Pause(ctx, "a.example"); err != nil {
				panic(err)
			}
			after <- q.workerList()[0].snapshot().Status
		}
		return sender.Success(202)
	}}
	q = startQueue(t, newMemory(), fake, testConfig())
	enqueueAll(t, q, note(1, "https://a.example/inbox"))
	select {
	case st := <-after:
		require.Equal(t, store.StatusPaused, st, "the worker took the pause in before Pause returned")
	case <-time.After(10 * time.Second):
		t.Fatal("Pause called from the Sender did not return")
	}
}

func TestADomainLimitFuncMayCallTheQueue(t *testing.T) {
	t.Parallel()
	var q *Queue
	cfg := testConfig()
	cfg.DomainLimitFunc = func(dom string) int {
		if _, err := q.Stats(context.Background()); err != nil {
			panic(err)
		}
		return 2
	}
	fake := &sendertest.Fake{}
	q = startQueue(t, newMemory(), fake, cfg)
	enqueueAll(t, q, note(1, "https://a.example/inbox"))
	eventually(t, func() bool { return fake.DeliveredCount() == 1 }, "delivered: the worker started although its limit function read the queue's stats")
}

func TestRetryNowClearsBackoff(t *testing.T) {
	t.Parallel()
	st := newMemory()
	var up atomic.Bool
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if up.Load() {
			return sender.Success(202)
		}
		return sender.Result{Outcome: sender.Retry, DomainLevel: true, Reason: "connection refused"}
	}}
	cfg := testConfig()
	cfg.BackoffMin = time.Hour
	cfg.BackoffMax = time.Hour
	q := startQueue(t, st, fake, cfg)
	enqueueAll(t, q, note(1, "https://a.example/inbox"))
	eventually(t, func() bool { return domainState(t, st, "a.example").FailCount == 1 }, "failed once, backing off an hour")
	up.Store(true)
	require.NoError(t, q.RetryNow(context.Background(), "a.example"))
	eventually(t, func() bool { return fake.DeliveredCount() == 1 }, "retried at once")
	eventually(t, func() bool {
		s := domainState(t, st, "a.example")
		return s.FailCount == 0 && s.LastError == ""
	}, "saved healthy")
}

func TestSkipToHeadAndMarkAlive(t *testing.T) {
	t.Parallel()
	st := newMemory()
	var alive atomic.Bool
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Domain == "gone.example" && !alive.Load() {
			return sender.Result{Outcome: sender.DomainGone, Status: 410, Reason: "410 Gone"}
		}
		return sender.Success(202)
	}}
	cfg := testConfig()
	q := startQueue(t, st, fake, cfg)
	ctx := context.Background()
	require.NoError(t, q.SetSharedInbox(ctx, "https://gone.example/inbox"))
	ids := enqueueAll(t, q, note(1, "https://gone.example/inbox"), note(2, "https://gone.example/inbox"), note(3, "https://gone.example/inbox"))
	eventually(t, func() bool { return domainState(t, st, "gone.example").Status == store.StatusDead }, "dead")

	skipped, err := q.SkipToHead(ctx, "gone.example")
	require.NoError(t, err)
	require.Equal(t, int64(3), skipped)
	eventually(t, func() bool {
		s := q.workerList()[0].snapshot()
		return s.Cursor == ids[2] && s.Pending == 0
	}, "the worker dropped the skipped backlog")

	alive.Store(true)
	require.NoError(t, q.MarkAlive(ctx, "gone.example"))
	more := enqueueAll(t, q, note(4, "https://gone.example/inbox"))
	eventually(t, func() bool { return len(fake.Delivered("https://gone.example/inbox")) == 1 }, "delivers again")
	require.Equal(t, more, fake.Delivered("https://gone.example/inbox"), "the skipped activities were not sent")
	eventually(t, func() bool {
		s := domainState(t, st, "gone.example")
		return s.Status == store.StatusActive && s.Cursor == more[0]
	}, "saved alive")
}

// startOwner starts the process that works the domains, with a short lease
// TTL so that it renews, and so learns of changes, often.
func startOwner(t *testing.T, st store.Store, fake *sendertest.Fake) *Queue {
	t.Helper()
	cfg := testConfig()
	cfg.OwnerID = "owner"
	// Renewals every 200 ms bring another process's change in soon; a
	// stall of a few hundred milliseconds does not end the lease.
	cfg.LeaseTTL = 600 * time.Millisecond
	return startQueue(t, st, fake, cfg)
}

func TestAdminChangeReachesTheOwningProcess(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	qa := startOwner(t, st, fake)
	enqueueAll(t, qa, note(1, "https://a.example/inbox"))
	eventually(t, func() bool { return fake.DeliveredCount() == 1 }, "worked by the owner")

	// An admin process that holds no domain.
	admin, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	require.NoError(t, admin.Pause(context.Background(), "a.example"))
	eventually(t, func() bool {
		ws := qa.workerList()
		return len(ws) == 1 && ws[0].snapshot().Status == store.StatusPaused
	}, "the owner takes the pause in at its next renewal")
	enqueueAll(t, qa, note(2, "https://a.example/inbox"))
	// Give the owner a checkpoint and a renewal to prove the pause holds.
	require.NoError(t, qa.checkpoints.save(context.Background()))
	require.Equal(t, store.StatusPaused, domainState(t, st, "a.example").Status, "the owner did not undo the pause")
	require.Equal(t, 1, fake.DeliveredCount())
}

func TestRequeueAndDiscardDeadLetters(t *testing.T) {
	t.Parallel()
	st := newMemory()
	var accept atomic.Bool
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if accept.Load() {
			return sender.Success(202)
		}
		return sender.Result{Outcome: sender.Permanent, Status: 422, Reason: "422 Unprocessable Entity"}
	}}
	q := startQueue(t, st, fake, testConfig())
	ctx := context.Background()
	ids := enqueueAll(t, q, note(1, "https://a.example/inbox"), note(2, "https://a.example/inbox"), note(3, "https://b.example/inbox"))
	eventually(t, func() bool {
		dls, err := q.DeadLetters(ctx, store.DeadLetterFilter{})
		require.NoError(t, err)
		return len(dls) == 3
	}, "three dead letters")
	dls, err := q.DeadLetters(ctx, store.DeadLetterFilter{Domain: "a.example"})
	require.NoError(t, err)
	require.Len(t, dls, 2)

	accept.Store(true)
	newIDs, err := q.RequeueDeadLetters(ctx, dls[0].ID, dls[1].ID)
	require.NoError(t, err)
	require.Len(t, newIDs, 2)
	require.Greater(t, newIDs[0], ids[2])
	eventually(t, func() bool { return len(fake.Delivered("https://a.example/inbox")) == 2 }, "requeued deliveries arrive")

	rest, err := q.DeadLetters(ctx, store.DeadLetterFilter{})
	require.NoError(t, err)
	require.Len(t, rest, 1, "requeued dead letters are gone")
	require.Equal(t, "b.example", rest[0].Domain)

	_, err = q.RequeueDeadLetters(ctx, rest[0].ID, 999999)
	require.ErrorIs(t, err, store.ErrNotFound, "unknown IDs: nothing done")
	n, err := q.DiscardDeadLetters(ctx, rest[0].ID)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	left, err := q.DeadLetters(ctx, store.DeadLetterFilter{})
	require.NoError(t, err)
	require.Empty(t, left)
}

// A dead letter recorded without an inbox (an AllDomains activity on a
// domain with no shared inbox known) is requeued to the domain's shared
// inbox once it is known, and refused, with nothing done, before.
func TestDeadLetterWithoutAnInboxIsRequeuedToTheSharedInbox(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	q := startQueue(t, st, fake, testConfig())
	ctx := t.Context()
	require.NoError(t, q.AddDomains(ctx, "a.example")) // no shared inbox known
	enqueueAll(t, q, Activity{Body: note(1).Body, AllDomains: true})
	var dls []store.DeadLetter
	eventually(t, func() bool {
		var err error
		dls, err = q.DeadLetters(ctx, store.DeadLetterFilter{Domain: "a.example"})
		require.NoError(t, err)
		return len(dls) == 1
	}, "the dead letter")
	require.Empty(t, dls[0].Inbox)

	_, err := q.RequeueDeadLetters(ctx, dls[0].ID)
	require.ErrorContains(t, err, "no shared inbox known")
	left, err := q.DeadLetters(ctx, store.DeadLetterFilter{Domain: "a.example"})
	require.NoError(t, err)
	require.Len(t, left, 1, "nothing done")

	const shared = "https://a.example/inbox"
	require.NoError(t, q.SetSharedInbox(ctx, shared))
	newIDs, err := q.RequeueDeadLetters(ctx, dls[0].ID)
	require.NoError(t, err)
	require.Len(t, newIDs, 1)
	eventually(t, func() bool { return len(fake.Delivered(shared)) == 1 }, "sent to the shared inbox")
	left, err = q.DeadLetters(ctx, store.DeadLetterFilter{Domain: "a.example"})
	require.NoError(t, err)
	require.Empty(t, left)
	require.Equal(t, newIDs, fake.Delivered(shared))
}

func TestSharedInboxReachesTheOwningProcess(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	qa := startOwner(t, st, fake)
	enqueueAll(t, qa, note(1, "https://a.example/users/1/inbox"))
	eventually(t, func() bool { return fake.DeliveredCount() == 1 }, "worked by the owner")

	other, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	require.NoError(t, other.SetSharedInbox(context.Background(), "https://a.example/inbox"))
	eventually(t, func() bool {
		ws := qa.workerList()
		return len(ws) == 1 && ws[0].snapshot().SharedInbox == "https://a.example/inbox"
	}, "the owner learns the shared inbox")
	enqueueAll(t, qa, note(2, "https://a.example/users/1/inbox", "https://a.example/users/2/inbox"))
	eventually(t, func() bool { return len(fake.Delivered("https://a.example/inbox")) == 1 }, "sent once, to the shared inbox")
	require.Len(t, fake.Delivered("https://a.example/users/2/inbox"), 0)
}

// TestSuspendInProcess suspends a domain this process works: nothing more
// is sent to it, an activity enqueued for it is reported and not kept
// pending past Unsuspend, other domains go on, and the suspension shows
// in Stats.
func TestSuspendInProcess(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	var dropped atomic.Int64
	cfg := testConfig()
	cfg.Observer = ObserverFunc(func(_ context.Context, e Event) {
		if e.Kind == EventSuspendedDropped {
			dropped.Store(e.ActivityID)
		}
	})
	q := startQueue(t, st, fake, cfg)
	ctx := context.Background()
	enqueueAll(t, q, note(1, "https://a.example/inbox"))
	eventually(t, func() bool { return fake.DeliveredCount() == 1 }, "delivered before the suspension")

	_, err := q.Suspend(ctx, "A.Example")
	require.NoError(t, err)
	eventually(t, func() bool { return q.workerList()[0].snapshot().Status == store.StatusSuspended }, "the worker took the suspension in")
	ids := enqueueAll(t, q, note(2, "https://a.example/inbox"), note(3, "https://b.example/inbox"))
	eventually(t, func() bool { return dropped.Load() == ids[0] }, "the drop is reported at enqueue")
	eventually(t, func() bool { return len(fake.Delivered("https://b.example/inbox")) == 1 }, "other domains go on")
	require.Len(t, fake.Delivered("https://a.example/inbox"), 1, "sent to a suspended domain")
	stats, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, stats.Suspended)

	require.NoError(t, q.Unsuspend(ctx, "a.example"))
	later := enqueueAll(t, q, note(4, "https://a.example/inbox"))
	eventually(t, func() bool { return len(fake.Delivered("https://a.example/inbox")) == 2 }, "delivery resumes after Unsuspend")
	require.Equal(t, []int64{1, later[0]}, fake.Delivered("https://a.example/inbox"), "what was enqueued while suspended was sent")

	// A domain never seen can be suspended before anything addresses it.
	_, err = q.Suspend(ctx, "never-seen.example")
	require.NoError(t, err)
	require.Equal(t, store.StatusSuspended, domainState(t, st, "never-seen.example").Status)
	first := enqueueAll(t, q, note(5, "https://never-seen.example/inbox"))
	eventually(t, func() bool { return dropped.Load() == first[0] }, "the drop of a domain suspended before it was seen is reported")
	require.ErrorIs(t, q.Unsuspend(ctx, "unknown.example"), store.ErrNotFound)
}

// TestForgetInProcess forgets a domain this process works: its worker
// stops at once, and the domain addressed again is delivered to as new.
func TestForgetInProcess(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	q := startQueue(t, st, fake, testConfig())
	ctx := context.Background()
	enqueueAll(t, q, note(1, "https://a.example/inbox"))
	eventually(t, func() bool { return fake.DeliveredCount() == 1 }, "delivered")

	require.NoError(t, q.Forget(ctx, "a.example"))
	require.Empty(t, q.workerList(), "the worker of a forgotten domain goes on")
	doms, err := st.Domains(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, doms)

	ids := enqueueAll(t, q, note(2, "https://a.example/inbox"))
	eventually(t, func() bool { return fake.DeliveredCount() == 2 }, "the domain addressed again is delivered to")
	require.Equal(t, []int64{1, ids[0]}, fake.Delivered("https://a.example/inbox"))
	require.ErrorIs(t, q.Forget(ctx, "unknown.example"), store.ErrNotFound)
}

func TestObserverThatPausesADomainLosesNoEvent(t *testing.T) {
	t.Parallel()
	const dom = "a.example"
	cfg := testConfig()
	cfg.ObserverBuffer = 1
	var q *Queue
	var pauses atomic.Int32
	paused := make(chan error, 1)
	cfg.Observer = ObserverFunc(func(ctx context.Context, e Event) {
		// A server that pauses a domain on its first event (say, one it
		// just blocked): Observe may call the queue's methods.
		if e.Domain == dom && pauses.Add(1) == 1 {
			paused <- q.Pause(ctx, dom)
		}
	})
	fake := &sendertest.Fake{}
	var err error
	q, err = New(newMemory(), fake, cfg)
	require.NoError(t, err)
	// Slow, never blocked, however slow the machine: an event is dropped
	// only if the observer and a worker wait for each other.
	q.events.stall = 30 * time.Second
	// Enough for one step of the worker to emit several events.
	var acts []Activity
	for i := range 8 {
		acts = append(acts, note(i, "https://"+dom+"/inbox"))
	}
	enqueueAll(t, q, acts...)
	require.NoError(t, q.Start(context.Background()))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })
	require.NoError(t, <-paused)
	st, err := q.Stats(context.Background())
	require.NoError(t, err)
	require.Zero(t, st.ObserverDropped, "Pause waited for the worker, which waited for room for its events, which only the observer in Pause makes")
}

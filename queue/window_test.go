package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

// countingStore counts reads of the activity log.
type countingStore struct {
	store.Store
	reads atomic.Int64
}

func (s *countingStore) Activities(ctx context.Context, after int64, limit int) ([]store.Activity, error) {
	s.reads.Add(1)
	return s.Store.Activities(ctx, after, limit)
}

func TestOneLogReadServesEveryCaughtUpDomain(t *testing.T) {
	t.Parallel()
	st := &countingStore{Store: newMemory()}
	fake := &sendertest.Fake{}
	q := startQueue(t, st, fake, testConfig())
	var inboxes []string
	var domains []string
	for i := range 50 {
		domains = append(domains, fmt.Sprintf("d%d.example", i))
		inboxes = append(inboxes, fmt.Sprintf("https://d%d.example/inbox", i))
	}
	require.NoError(t, q.AddDomains(context.Background(), domains...))
	eventually(t, func() bool { return q.workerCount() == 50 }, "a worker per domain")

	for round := 1; round <= 5; round++ {
		before := st.reads.Load()
		enqueueAll(t, q, note(round, inboxes...))
		eventually(t, func() bool { return fake.DeliveredCount() == 50*round }, "delivered to every domain")
		reads := st.reads.Load() - before
		require.LessOrEqual(t, reads, int64(3), "round %d: %d log reads for 50 caught-up domains", round, reads)
	}
}

func TestLaggingDomainHoldsABoundedBatch(t *testing.T) {
	t.Parallel()
	st := newMemory()
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return sender.Success(202)
	}}
	cfg := testConfig()
	cfg.ReadBatch = 16
	cfg.WindowSize = 32
	cfg.MaxPendingPerDomain = 16
	cfg.MaxInFlightPerDomain, cfg.FixedInFlight = 4, true
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	var acts []Activity
	for i := range 200 {
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	ids, err := q.EnqueueMany(context.Background(), acts)
	require.NoError(t, err)
	require.NoError(t, q.Start(context.Background()))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })

	eventually(t, func() bool { return q.workerCount() == 1 }, "worker started")
	w := q.workerList()[0]
	eventually(t, func() bool {
		return w.snapshot().InFlight == q.cfg.MaxInFlightPerDomain
	}, "requests in flight")
	pending := w.snapshot().Pending
	require.Equal(t, cfg.MaxPendingPerDomain, pending, "a backlog of 200 holds MaxPendingPerDomain deliveries in memory")

	releaseOnce.Do(func() { close(release) })
	eventuallyCount(t, fake.DeliveredCount, 200, "the backlog behind the window is delivered")
	require.Equal(t, ids, sortedIDs(fake.Delivered("https://a.example/inbox")))
}

func sortedIDs(ids []int64) []int64 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

func TestReadBehindAnEmptiedWindowDoesNotSpin(t *testing.T) {
	t.Parallel()
	st := newMemory()
	q, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	ctx := context.Background()
	var acts []Activity
	for i := range 10 {
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	ids, err := q.EnqueueMany(ctx, acts)
	require.NoError(t, err)
	w := newWindow(st, 4, 4, 1<<20, 0, quietLogger())
	require.NoError(t, w.refresh(ctx))
	// Everything is settled and pruned, as for a dead domain left behind.
	leased, err := st.AcquireLeases(ctx, "o", time.Minute, 1)
	require.NoError(t, err)
	leased[0].Cursor = ids[9]
	require.NoError(t, st.Checkpoint(ctx, leased, nil))
	_, err = st.Prune(ctx)
	require.NoError(t, err)

	wk := &worker{domain: "a.example"}
	after, reads := int64(0), 0
	for after < ids[5] {
		res, err := w.read(ctx, wk, after, 4, true)
		require.NoError(t, err)
		require.Empty(t, res.entries)
		require.False(t, res.caughtUp)
		require.False(t, res.wait)
		require.Greater(t, res.scanned, after, "a read behind the window moves on")
		after = res.scanned
		reads++
	}
	require.Equal(t, ids[5], after, "moves up to the window's base instead of reading the same empty range forever")
	require.LessOrEqual(t, reads, 2, "one read per block of the pruned range")
	res, err := w.read(ctx, wk, after, 4, true)
	require.NoError(t, err)
	require.Len(t, res.entries, 4, "the window serves the rest")
	require.Equal(t, ids[9], res.scanned)
}

func TestCatchingUpReadsTheStoreInBatches(t *testing.T) {
	t.Parallel()
	st := &countingStore{Store: newMemory()}
	fake := &sendertest.Fake{}
	cfg := testConfig()
	cfg.ReadBatch, cfg.WindowSize = 16, 16
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	var acts []Activity
	for i := range 320 {
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	_, err = q.EnqueueMany(context.Background(), acts)
	require.NoError(t, err)
	require.NoError(t, q.Start(context.Background()))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })
	eventuallyCount(t, fake.DeliveredCount, 320, "the backlog is delivered")
	// Refilling at half the room: about 320/8 reads, not one per delivery.
	require.LessOrEqual(t, st.reads.Load(), int64(60), "log reads while catching up on 320 activities")
}

func TestWindowIsBoundedInBytes(t *testing.T) {
	t.Parallel()
	st := newMemory()
	q, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	ctx := context.Background()
	big := fmt.Sprintf(`{"actor":%q,"content":"%s"}`, testActor, strings.Repeat("x", 10_000))
	var acts []Activity
	for range 50 {
		acts = append(acts, Activity{Body: []byte(big), Inboxes: []string{"https://a.example/inbox"}})
	}
	ids, err := q.EnqueueMany(ctx, acts)
	require.NoError(t, err)

	w := newWindow(st, 100, 1000, 100_000, 0, quietLogger()) // about ten of these bodies
	require.NoError(t, w.refresh(ctx))
	w.mu.Lock()
	held, bytes, base := len(w.idx.entries), w.bytes, w.base
	w.mu.Unlock()
	require.LessOrEqual(t, bytes, 100_000)
	require.Less(t, held, 12, "entries kept within the byte bound")
	require.Equal(t, ids[49-held], base, "the window covers exactly what it holds")

	// A domain behind the window still gets everything, from the store.
	var got []int64
	wk := &worker{domain: "a.example"}
	for after := int64(0); after < ids[49]; {
		res, err := w.read(ctx, wk, after, 16, true)
		require.NoError(t, err)
		require.False(t, res.wait)
		for _, e := range res.entries {
			got = append(got, e.act.ID)
		}
		after = res.scanned
	}
	require.Equal(t, ids, got)
}

func TestQuietDomainReadsOnFromWhereItWasWoken(t *testing.T) {
	t.Parallel()
	st := &countingStore{Store: newMemory()}
	fake := &sendertest.Fake{}
	cfg := testConfig()
	cfg.ReadBatch, cfg.WindowSize = 16, 64
	q := startQueue(t, st, fake, cfg)
	enqueueAll(t, q, note(0, "https://quiet.example/inbox"))
	eventually(t, func() bool { return fake.DeliveredCount() == 1 }, "the quiet domain's first activity")
	n := 0
	for range 40 { // 2,000 activities for another domain roll the window on
		var acts []Activity
		for range 50 {
			n++
			acts = append(acts, note(n, "https://busy.example/inbox"))
		}
		enqueueAll(t, q, acts...)
	}
	eventuallyCount(t, fake.DeliveredCount, n+1, "the busy domain's activities")
	before := st.reads.Load()
	enqueueAll(t, q, note(n+1, "https://quiet.example/inbox"))
	eventually(t, func() bool { return len(fake.Delivered("https://quiet.example/inbox")) == 2 }, "the quiet domain's second activity")
	require.LessOrEqual(t, st.reads.Load()-before, int64(2),
		"the quiet domain read the log it had slept through instead of going on from the activity that woke it")
}

func TestIdleOnlyOnceDeadLettersAreOffered(t *testing.T) {
	t.Parallel()
	st := newMemory()
	q, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, q.AddDomains(ctx, "a.example"))
	require.NoError(t, q.window.init(ctx))
	_, err = q.EnqueueMany(ctx, []Activity{{Body: []byte(`{"id":"https://local.example/x","actor":"https://local.example/u"}`), AllDomains: true}})
	require.NoError(t, err)
	require.NoError(t, q.window.refresh(ctx))
	states, err := st.AcquireLeases(ctx, "o", time.Minute, 10)
	require.NoError(t, err)
	w := newWorker(q, ctx, states[0], time.Now().Add(time.Minute), q.domainLimit(states[0].Domain))
	w.fill() // the activity has nowhere to go here: a dead letter, nothing to send
	require.Len(t, w.deadLetters, 1)
	_, ok := q.window.settledThrough(w)
	require.False(t, ok, "idle before its dead letter was offered: a renewal could move the cursor past it")
	w.offer()
	w.advanceCursor() // as the run loop does before it fills
	w.fill()
	_, ok = q.window.settledThrough(w)
	require.True(t, ok, "idle once offered")
	require.True(t, q.checkpoints.unsaved("a.example"), "the lease keeper waits for the save")
}

// failingReads fails the next `fail` reads of the activity log, and makes
// the next `hang` ones wait until their context ends.
type failingReads struct {
	store.Store
	fail, hang atomic.Int64
}

func (s *failingReads) Activities(ctx context.Context, after int64, limit int) ([]store.Activity, error) {
	if s.hang.Add(-1) >= 0 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if s.fail.Add(-1) >= 0 {
		return nil, errors.New("connection reset")
	}
	return s.Store.Activities(ctx, after, limit)
}

// TestAFailedLogReadIsRetried makes the refresh that an enqueue's wake-up
// starts fail three times (a store whose connection was just ended fails
// the first read after the notification), or wait forever (a connection
// that died without a word), which must end with Config.StoreTimeout: the
// window must read again by itself, since no other wake-up comes and the
// poll interval is an hour.
func TestAFailedLogReadIsRetried(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault func(*failingReads) *atomic.Int64
	}{
		{"three failed reads", func(st *failingReads) *atomic.Int64 { st.fail.Store(3); return &st.fail }},
		{"a read that never answers", func(st *failingReads) *atomic.Int64 { st.hang.Store(1); return &st.hang }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := &failingReads{Store: newMemory()}
			q, fake := startWithADomain(t, st)

			left := tc.fault(st)
			ids := enqueueAll(t, q, note(1, "https://a.example/inbox"))
			eventually(t, func() bool { return slices.Contains(fake.Delivered("https://a.example/inbox"), ids[0]) },
				"the activity was not delivered after %s", tc.name)
			require.Negative(t, left.Load(), "the fault did not happen")
		})
	}
}

// failingListen fails every Listen call at once, counting them.
type failingListen struct {
	store.Store
	calls atomic.Int64
}

func (s *failingListen) Listen(context.Context, func()) error {
	s.calls.Add(1)
	return errors.New("database is locked")
}

// TestListenIsRetriedWithinThePollInterval fails every Listen with a
// delivery backoff of an hour: the queue tries again within the poll
// interval, not after the backoff.
func TestListenIsRetriedWithinThePollInterval(t *testing.T) {
	t.Parallel()
	st := &failingListen{Store: newMemory()}
	cfg := testConfig()
	cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour
	cfg.PollInterval = 50 * time.Millisecond
	startQueue(t, st, &sendertest.Fake{}, cfg)
	eventually(t, func() bool { return st.calls.Load() >= 4 }, "Listen was not retried")
}

// silentFirstListen's first Listen call hears nothing: it returns an
// error once the test has appended (an append nobody was notified of).
type silentFirstListen struct {
	store.Store
	calls    atomic.Int64
	appended chan struct{}
}

func (s *silentFirstListen) Listen(ctx context.Context, notify func()) error {
	if s.calls.Add(1) == 1 {
		<-s.appended
		return errors.New("connection lost")
	}
	return s.Store.Listen(ctx, notify)
}

// TestAnAppendMissedWhileNotListeningIsRead appends while the store's
// Listen is failing, with the poll interval an hour: the queue reads the
// log as it listens again.
func TestAnAppendMissedWhileNotListeningIsRead(t *testing.T) {
	t.Parallel()
	st := &silentFirstListen{Store: newMemory(), appended: make(chan struct{})}
	_, fake := startWithADomain(t, st)

	// Appended by another process: this one's window is not woken.
	res, err := st.Append(t.Context(), []store.NewActivity{{
		Actor: "https://local.example/users/alice", Body: []byte(`{"type":"Create"}`),
		Inboxes: []string{"https://a.example/inbox"}, Domains: []string{"a.example"},
	}})
	require.NoError(t, err)
	close(st.appended)
	eventually(t, func() bool { return slices.Contains(fake.Delivered("https://a.example/inbox"), res[0].ID) },
		"an append made while nobody listened was not read")
}

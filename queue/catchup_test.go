package queue

import (
	"context"
	"errors"
	"fmt"
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

// rowCountingStore counts how many times Activities returns each row of the
// log, and can fail chosen calls, as a database that drops a connection.
type rowCountingStore struct {
	store.Store
	mu    sync.Mutex
	reads map[int64]int
	calls int
	// failCall, if set, says whether the call numbered n (from 1) fails.
	failCall func(n int) bool
	failed   atomic.Int64
	// gate, if set, holds reads of IDs up to gateBelow until closed.
	gate      chan struct{}
	gateBelow int64
}

func newRowCountingStore(st store.Store) *rowCountingStore {
	return &rowCountingStore{Store: st, reads: make(map[int64]int)}
}

var errReadFailed = errors.New("connection reset while reading the log")

func (s *rowCountingStore) Activities(ctx context.Context, after int64, limit int) ([]store.Activity, error) {
	s.mu.Lock()
	s.calls++
	n := s.calls
	s.mu.Unlock()
	if s.gate != nil && after < s.gateBelow {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if s.failCall != nil && s.failCall(n) {
		s.failed.Add(1)
		return nil, errReadFailed
	}
	acts, err := s.Store.Activities(ctx, after, limit)
	s.mu.Lock()
	for _, a := range acts {
		s.reads[a.ID]++
	}
	s.mu.Unlock()
	return acts, err
}

// mostReads returns the most reads of one of ids, and the total.
func (s *rowCountingStore) mostReads(ids []int64) (most, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		most = max(most, s.reads[id])
		total += s.reads[id]
	}
	return most, total
}

// backlogBehind enqueues, on a queue not started yet, activities to
// domains domains, each activity to perActivity of them in turn, so that
// every domain is behind the window when the queue starts, as after a
// restart. It returns the IDs and what each inbox must receive.
func backlogBehind(t *testing.T, q *Queue, domains, activities, perActivity int) ([]int64, map[string][]int64) {
	t.Helper()
	acts := make([]Activity, activities)
	for i := range acts {
		var inboxes []string
		for j := range perActivity {
			inboxes = append(inboxes, fmt.Sprintf("https://d%03d.example/inbox", (i*perActivity+j)%domains))
		}
		acts[i] = note(i, inboxes...)
	}
	ids, err := q.EnqueueMany(context.Background(), acts)
	require.NoError(t, err)
	want := make(map[string][]int64)
	for i, a := range acts {
		for _, inbox := range a.Inboxes {
			want[inbox] = append(want[inbox], ids[i])
		}
	}
	return ids, want
}

// catchUpConfig reads the log in blocks of 16 IDs, with room in memory for
// about two of them: far less than the backlog of the tests.
func catchUpConfig() *Config {
	cfg := testConfig()
	cfg.ReadBatch, cfg.WindowSize = 16, 16
	cfg.WindowBytes = 100_000
	return cfg
}

// requireDeliveredOnce checks that every inbox received exactly what it
// should, each activity once.
func requireDeliveredOnce(t *testing.T, fake *sendertest.Fake, want map[string][]int64) {
	t.Helper()
	for inbox, ids := range want {
		require.Equal(t, ids, sortedIDs(fake.Delivered(inbox)), "%s: every activity once", inbox)
	}
}

func TestRestartWithDomainsBehindReadsEachRowAtMostTwice(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	fake := &sendertest.Fake{}
	q, err := New(st, fake, catchUpConfig())
	require.NoError(t, err)
	ids, want := backlogBehind(t, q, 100, 800, 3)
	// Every domain's worker starts before the backlog is read, as when the
	// leases are all taken in the first round; a domain taken later joins
	// behind the sweep and reads what it passed again (see
	// TestCatchUpStalledReaderHoldsNoBlock).
	st.gate, st.gateBelow = make(chan struct{}), ids[len(ids)-1]
	require.NoError(t, q.Start(context.Background()))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })
	eventually(t, func() bool { return q.workerCount() == 100 }, "a worker per domain")
	close(st.gate)

	c := q.window.catchUp
	peak := 0 // the most the blocks held whenever looked at
	eventually(t, func() bool {
		peak = max(peak, c.size())
		return fake.DeliveredCount() == 2400
	}, "the backlog is delivered")
	requireDeliveredOnce(t, fake, want)
	most, total := st.mostReads(ids)
	t.Logf("100 domains behind, 800 activities: each row read at most %d times, %.2f on average; blocks held at most %d bytes", most, float64(total)/float64(len(ids)), peak)
	require.LessOrEqual(t, most, 2, "reads of one log row")
	c.mu.Lock()
	estimate := c.estimate
	c.mu.Unlock()
	require.Positive(t, estimate)
	require.LessOrEqual(t, peak, 50_000+estimate, "the blocks stay within WindowBytes/2, give or take a block's size")
}

func TestCatchUpPausedDomainDropsOutAndResumesFromItsCursor(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	fake := &sendertest.Fake{}
	q, err := New(st, fake, catchUpConfig())
	require.NoError(t, err)
	ctx := context.Background()
	ids, want := backlogBehind(t, q, 50, 400, 2)
	require.NoError(t, q.Pause(ctx, "d007.example"))
	st.gate, st.gateBelow = make(chan struct{}), ids[len(ids)-1]
	require.NoError(t, q.Start(ctx))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })
	eventually(t, func() bool { return q.workerCount() == 50 }, "a worker per domain")
	close(st.gate)

	paused := "https://d007.example/inbox"
	others := 800 - len(want[paused])
	eventually(t, func() bool { return fake.DeliveredCount() == others }, "every other domain catches up while one is paused")
	require.Empty(t, fake.Delivered(paused))

	require.NoError(t, q.Resume(ctx, "d007.example"))
	eventually(t, func() bool { return fake.DeliveredCount() == 800 }, "the paused domain gets its backlog once resumed")
	requireDeliveredOnce(t, fake, want)
	most, _ := st.mostReads(ids)
	require.LessOrEqual(t, most, 2, "the sweep reads each row once, the paused domain once more")
}

func TestCatchUpRetriesAFailedReadWithoutLosingActivities(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	// The first read of the backlog and every fifth after fail.
	st.failCall = func(n int) bool { return n%5 == 2 }
	fake := &sendertest.Fake{}
	q, err := New(st, fake, catchUpConfig())
	require.NoError(t, err)
	_, want := backlogBehind(t, q, 40, 300, 2)
	require.NoError(t, q.Start(context.Background()))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })

	eventually(t, func() bool { return fake.DeliveredCount() == 600 }, "the backlog is delivered despite failing reads")
	require.Positive(t, st.failed.Load(), "reads failed")
	requireDeliveredOnce(t, fake, want)
}

func TestCatchUpDoesNotWaitLongForABusyDomain(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	slow := "https://slow.example/inbox"
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Inbox == slow {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return sender.Success(202)
	}}
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := catchUpConfig()
	cfg.ReadBatch, cfg.WindowSize = 32, 32 // the slow domain stops reading inside a block
	cfg.WindowBytes = 60_000               // one block at a time
	cfg.MaxInFlightPerDomain, cfg.FixedInFlight = 4, true
	cfg.clock = clk
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	// The slow domain is addressed by every activity, 20 others in turn.
	acts := make([]Activity, 320)
	want := make(map[string][]int64)
	for i := range acts {
		acts[i] = note(i, slow, fmt.Sprintf("https://d%02d.example/inbox", i%20))
	}
	ids, err := q.EnqueueMany(context.Background(), acts)
	require.NoError(t, err)
	for i, a := range acts {
		for _, inbox := range a.Inboxes {
			want[inbox] = append(want[inbox], ids[i])
		}
	}
	require.NoError(t, q.Start(context.Background()))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })

	// The slow domain holds its block for catchUpPatience; past it, the
	// others go on without it, however long its requests take.
	others := func() bool { return fake.DeliveredCount() == 320 }
	require.Eventually(t, func() bool {
		clk.Advance(time.Second)
		return others()
	}, 10*time.Second, 5*time.Millisecond, "the other domains catch up while the slow one's requests hang")
	require.Empty(t, fake.Delivered(slow))

	releaseOnce.Do(func() { close(release) })
	eventually(t, func() bool { return fake.DeliveredCount() == 640 }, "the slow domain gets everything once it answers")
	requireDeliveredOnce(t, fake, want)
}

// catchUpWorker is a bare worker for tests of the catch-up alone.
func catchUpWorker(dom string) *worker {
	return &worker{domain: dom, nudge: make(chan struct{}, 1)}
}

func poked(w *worker) bool {
	select {
	case <-w.nudge:
		return true
	default:
		return false
	}
}

func TestCatchUpLoadWaitsForTheReadersOfTheBlockInMemory(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	q, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	ctx := context.Background()
	var acts []Activity
	for i := range 40 {
		acts = append(acts, note(i, "https://a.example/inbox", "https://b.example/inbox"))
	}
	ids, err := q.EnqueueMany(ctx, acts)
	require.NoError(t, err)
	first := ids[0] - 1 // the blocks start at multiples of 10 from here
	require.Zero(t, first%10)

	c := newCatchUp(st, 10, 1) // room for one block only
	a, b := catchUpWorker("a.example"), catchUpWorker("b.example")
	c.join(a, first)
	c.join(b, first)
	base := ids[39]

	res, err := c.read(ctx, a, first, 100, base)
	require.NoError(t, err)
	require.Len(t, res.entries, 10)
	res, err = c.read(ctx, a, res.scanned, 100, base)
	require.NoError(t, err)
	require.True(t, res.wait, "b still needs the block in memory: a waits")
	require.True(t, res.retryAt.IsZero(), "b reads on at once: a is poked, not timed")

	res, err = c.read(ctx, b, first, 5, base)
	require.NoError(t, err)
	require.Len(t, res.entries, 5)
	require.False(t, poked(a), "b is still in the block")
	res, err = c.read(ctx, b, res.scanned, 5, base)
	require.NoError(t, err)
	require.Len(t, res.entries, 5)
	require.True(t, poked(a), "b left the block: a may load the next")

	// Both go on through the log, each waiting only while the other reads
	// the block in memory: every block is read once for both.
	afters := map[*worker]int64{a: ids[9], b: ids[9]}
	for afters[a] < base || afters[b] < base {
		progressed := false
		for _, w := range []*worker{a, b} {
			if afters[w] >= base {
				continue
			}
			res, err := c.read(ctx, w, afters[w], 100, base)
			require.NoError(t, err)
			if !res.wait {
				require.Len(t, res.entries, 10)
				afters[w] = res.scanned
				progressed = true
			}
		}
		require.True(t, progressed, "one of them reads on")
	}
	most, _ := st.mostReads(ids)
	require.Equal(t, 1, most, "each row read once")
}

func TestCatchUpStalledReaderHoldsNoBlock(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	q, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	ctx := context.Background()
	var acts []Activity
	for i := range 20 {
		acts = append(acts, note(i, "https://a.example/inbox", "https://b.example/inbox"))
	}
	ids, err := q.EnqueueMany(ctx, acts)
	require.NoError(t, err)
	first, base := ids[0]-1, ids[19]
	require.Zero(t, first%10)

	c := newCatchUp(st, 10, 1)
	a, b := catchUpWorker("a.example"), catchUpWorker("b.example")
	c.join(a, first)
	c.join(b, first)
	res, err := c.read(ctx, b, first, 3, base)
	require.NoError(t, err)
	require.Len(t, res.entries, 3)
	c.park(b, true) // b backs off inside the block

	res, err = c.read(ctx, a, first, 100, base)
	require.NoError(t, err)
	res, err = c.read(ctx, a, res.scanned, 100, base)
	require.NoError(t, err)
	require.False(t, res.wait, "a stalled reader does not hold the block")
	require.Len(t, res.entries, 10)

	// b resumes from where it stopped and reads its block again.
	res, err = c.read(ctx, b, ids[2], 100, base)
	require.NoError(t, err)
	require.Equal(t, ids[3:10], entryIDs(res.entries))
	most, _ := st.mostReads(ids)
	require.Equal(t, 2, most, "the block b needs again is read a second time")
}

func entryIDs(entries []*entry) []int64 {
	ids := make([]int64, len(entries))
	for i, e := range entries {
		ids[i] = e.act.ID
	}
	return ids
}

// twoBlockLog enqueues 20 activities to a.example and b.example and returns
// their IDs and the ID before the first, a multiple of 10.
func twoBlockLog(t *testing.T, st store.Store) ([]int64, int64) {
	t.Helper()
	q, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	var acts []Activity
	for i := range 20 {
		acts = append(acts, note(i, "https://a.example/inbox", "https://b.example/inbox"))
	}
	ids, err := q.EnqueueMany(context.Background(), acts)
	require.NoError(t, err)
	require.Zero(t, (ids[0]-1)%10)
	return ids, ids[0] - 1
}

func TestCatchUpReaderThatLeavesFreesItsBlock(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	ids, first := twoBlockLog(t, st)
	ctx, base := context.Background(), ids[19]
	c := newCatchUp(st, 10, 1)
	a, b := catchUpWorker("a.example"), catchUpWorker("b.example")
	c.join(a, first)
	c.join(b, first)
	res, err := c.read(ctx, a, first, 100, base)
	require.NoError(t, err)
	res, err = c.read(ctx, a, res.scanned, 100, base)
	require.NoError(t, err)
	require.True(t, res.wait, "b has not read the block yet")

	c.leave(b) // its lease was lost, or it stops
	require.True(t, poked(a), "the block b held is free")
	res, err = c.read(ctx, a, ids[9], 100, base)
	require.NoError(t, err)
	require.Equal(t, ids[10:], entryIDs(res.entries))
}

func TestCatchUpBusyReaderHoldsItsBlockForItsPatienceOnly(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	ids, first := twoBlockLog(t, st)
	ctx, base := context.Background(), ids[19]
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c := newCatchUp(st, 10, 1)
	c.clock = clk
	a, b := catchUpWorker("a.example"), catchUpWorker("b.example")
	c.join(a, first)
	c.join(b, first)
	res, err := c.read(ctx, b, first, 4, base)
	require.NoError(t, err)
	require.Len(t, res.entries, 4)
	c.park(b, false) // busy: enough to send, inside the block

	res, err = c.read(ctx, a, first, 100, base)
	require.NoError(t, err)
	res, err = c.read(ctx, a, res.scanned, 100, base)
	require.NoError(t, err)
	require.True(t, res.wait, "a busy reader keeps its block for a while")
	require.Equal(t, clk.Now().Add(catchUpPatience), res.retryAt, "a reads again when the patience ends")

	clk.Advance(catchUpPatience)
	res, err = c.read(ctx, a, ids[9], 100, base)
	require.NoError(t, err)
	require.False(t, res.wait, "past its patience, b no longer holds the block")
	require.Equal(t, ids[10:], entryIDs(res.entries))

	// b reads on from where it stopped; dropped once, it holds nothing
	// when busy again.
	res, err = c.read(ctx, b, ids[3], 3, base)
	require.NoError(t, err)
	require.Equal(t, ids[4:7], entryIDs(res.entries))
	c.park(b, false)
	res, err = c.read(ctx, a, base, 100, base+100)
	require.NoError(t, err)
	require.False(t, res.wait, "b, dropped before, does not hold its block again")
	require.Empty(t, res.entries)
}

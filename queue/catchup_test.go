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

	"github.com/stretchr/testify/assert"
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
	// failWith, if set, is the error of the failing calls (errReadFailed
	// otherwise).
	failWith error
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
		if s.failWith != nil {
			return nil, s.failWith
		}
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
	eventuallyCount(t, func() int {
		peak = max(peak, c.size())
		return fake.DeliveredCount()
	}, 2400, "the backlog is delivered")
	requireDeliveredOnce(t, fake, want)
	most, total := st.mostReads(ids)
	t.Logf("100 domains behind, 800 activities: each row read at most %d times, %.2f on average; blocks held at most %d bytes", most, float64(total)/float64(len(ids)), peak)
	require.LessOrEqual(t, most, 2, "reads of one log row")
	c.mu.Lock()
	estimate := c.estimate
	c.mu.Unlock()
	require.Positive(t, estimate)
	require.LessOrEqual(t, peak, 50_000+estimate, "the blocks stay within WindowBytes/2, give or take a block's size")
	eventually(t, func() bool { return c.size() == 0 }, "the blocks go once no domain is behind, and leave the window its room")
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
	eventuallyCount(t, fake.DeliveredCount, others, "every other domain catches up while one is paused")
	require.Empty(t, fake.Delivered(paused))

	require.NoError(t, q.Resume(ctx, "d007.example"))
	eventuallyCount(t, fake.DeliveredCount, 800, "the paused domain gets its backlog once resumed")
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

	eventuallyCount(t, fake.DeliveredCount, 600, "the backlog is delivered despite failing reads")
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
	eventuallyCount(t, fake.DeliveredCount, 640, "the slow domain gets everything once it answers")
	requireDeliveredOnce(t, fake, want)
}

// twoReaders returns a catch-up over st with blocks of 10 IDs and room for
// one, that tries again only when its rules say so (no safety retry), and
// two bare workers, of a.example and b.example, joined at first. clk, if
// set, is the catch-up's clock.
func twoReaders(st store.Store, first int64, clk clock.Clock) (*catchUp, *worker, *worker) {
	c := newCatchUp(st, 10, 1)
	c.retry = time.Hour
	if clk != nil {
		c.clock = clk
	}
	a, b := catchUpWorker("a.example"), catchUpWorker("b.example")
	c.join(a, first)
	c.join(b, first)
	return c, a, b
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
	c.retry = time.Hour        // the rules' own pokes and times, not the safety retry
	a, b := catchUpWorker("a.example"), catchUpWorker("b.example")
	c.join(a, first)
	c.join(b, first)
	base := ids[39]

	res, err := c.read(ctx, a, first, 100, base)
	require.NoError(t, err)
	require.Len(t, res.entries, 10)
	from := time.Now()
	res, err = c.read(ctx, a, res.scanned, 100, base)
	require.NoError(t, err)
	require.True(t, res.wait, "b still needs the block in memory: a waits")
	// b reads on at once: a is poked, and tries again after b's patience
	// at the latest, in case b turns busy.
	require.False(t, res.retryAt.Before(from.Add(catchUpPatience)))
	require.False(t, res.retryAt.After(time.Now().Add(catchUpPatience)))

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

	c, a, b := twoReaders(st, first, nil)
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
	c, a, b := twoReaders(st, first, nil)
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
	c, a, b := twoReaders(st, first, clk)
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

func TestCatchUpKeepsTheBlocksABusyReaderReadsNext(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	ids, first := blockLog(t, st, 40)
	ctx, base := context.Background(), ids[39]
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c, a, b := twoReaders(st, first, clk)
	res, err := c.read(ctx, a, first, 100, base)
	require.NoError(t, err)
	require.Len(t, res.entries, 10)
	c.mu.Lock()
	c.maxBytes = 5 * c.estimate / 2 // room for two blocks, not three
	c.mu.Unlock()
	res, err = c.read(ctx, b, first, 100, base)
	require.NoError(t, err)
	require.Len(t, res.entries, 10)
	res, err = c.read(ctx, b, ids[9], 4, base)
	require.NoError(t, err)
	require.Len(t, res.entries, 4)
	c.park(b, false) // busy: enough to send, inside the second block

	// a reads the second block and the third, and wants the fourth: the
	// third is still to be read by b, whose patience has not run out.
	for _, after := range []int64{ids[9], ids[19]} {
		res, err = c.read(ctx, a, after, 100, base)
		require.NoError(t, err)
		require.False(t, res.wait)
		require.Len(t, res.entries, 10)
	}
	res, err = c.read(ctx, a, ids[29], 100, base)
	require.NoError(t, err)
	require.True(t, res.wait, "the block b reads next stays for it")
	require.Equal(t, clk.Now().Add(catchUpPatience), res.retryAt, "until b's patience ends at the latest")

	// b reads on: the second block is free once it has left it.
	res, err = c.read(ctx, b, ids[13], 100, base)
	require.NoError(t, err)
	require.Equal(t, ids[14:20], entryIDs(res.entries))
	require.True(t, poked(a))
	res, err = c.read(ctx, a, ids[29], 100, base)
	require.NoError(t, err)
	require.False(t, res.wait)
	require.Equal(t, ids[30:], entryIDs(res.entries))
	for after := ids[19]; after < base; after = res.scanned {
		res, err = c.read(ctx, b, after, 100, base)
		require.NoError(t, err)
		require.False(t, res.wait)
	}
	most, _ := st.mostReads(ids)
	require.Equal(t, 1, most, "each block read once for both")
}

func TestCatchUpWaiterForTheBlocksOfABusyReaderBehindIsWokenWhenTheyComeFree(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	ids, first := blockLog(t, st, 50)
	ctx, base := context.Background(), ids[49]
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c := newCatchUp(st, 10, 1)
	c.retry = time.Hour // the rules' own pokes and times, not the safety retry
	c.clock = clk
	a, b := catchUpWorker("a.example"), catchUpWorker("b.example")
	c.join(b, first)
	c.join(a, first+20)
	res, err := c.read(ctx, b, first, 100, base)
	require.NoError(t, err)
	require.Len(t, res.entries, 10)
	c.park(b, false) // busy before the block it reads next is loaded
	c.mu.Lock()
	c.maxBytes = 5 * c.estimate / 2 // room for two blocks, not three
	c.mu.Unlock()
	for _, after := range []int64{ids[19], ids[29]} {
		res, err = c.read(ctx, a, after, 100, base)
		require.NoError(t, err)
		require.False(t, res.wait)
	}
	res, err = c.read(ctx, a, ids[39], 100, base)
	require.NoError(t, err)
	require.True(t, res.wait, "the blocks a read are kept for b, behind them")
	require.Equal(t, clk.Now().Add(catchUpPatience), res.retryAt, "until b's patience ends at the latest")

	c.leave(b)
	require.True(t, poked(a), "b left: the blocks kept for it are free")
	res, err = c.read(ctx, a, ids[39], 100, base)
	require.NoError(t, err)
	require.False(t, res.wait)
	require.Equal(t, ids[40:], entryIDs(res.entries))
}

// blockLog enqueues n activities, a multiple of 10, to a.example and
// b.example, and returns their IDs and the ID before the first, a multiple
// of 10: blocks of 10 IDs each hold 10 of them.
func blockLog(t *testing.T, st store.Store, n int) ([]int64, int64) {
	t.Helper()
	q, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	var acts []Activity
	for i := range n {
		acts = append(acts, note(i, "https://a.example/inbox", "https://b.example/inbox"))
	}
	ids, err := q.EnqueueMany(context.Background(), acts)
	require.NoError(t, err)
	require.Zero(t, (ids[0]-1)%10)
	return ids, ids[0] - 1
}

func TestCatchUpReaderBehindThatStopsReadingWakesTheOneWaitingForIt(t *testing.T) {
	t.Parallel()
	for _, stops := range []string{"stalls", "leaves"} {
		t.Run(stops, func(t *testing.T) {
			st := newRowCountingStore(newMemory())
			ids, first := blockLog(t, st, 30)
			ctx, base := context.Background(), ids[29]
			c := newCatchUp(st, 10, 1) // room for one block
			c.retry = time.Hour        // the rules' own pokes and times, not the safety retry
			a, b := catchUpWorker("a.example"), catchUpWorker("b.example")
			c.join(a, first)
			c.join(b, first+10)
			res, err := c.read(ctx, b, first+10, 3, base)
			require.NoError(t, err)
			require.Len(t, res.entries, 3)
			res, err = c.read(ctx, a, first, 100, base)
			require.NoError(t, err)
			require.True(t, res.wait, "b is in the block in memory")

			// b reads the rest of its block: a, behind, may load its own.
			res, err = c.read(ctx, b, ids[12], 100, base)
			require.NoError(t, err)
			require.Len(t, res.entries, 7)
			require.True(t, poked(a))
			// Before a does, b wants the next block: a, behind, goes first.
			res, err = c.read(ctx, b, ids[19], 100, base)
			require.NoError(t, err)
			require.True(t, res.wait, "the reader behind loads first")
			require.WithinDuration(t, time.Now().Add(c.retry), res.retryAt, time.Minute, "no time of the rules' own: a poke is expected")

			// a, poked, does not read after all: its domain was paused
			// meanwhile, or its lease lost. Nobody is behind b any more, and
			// nothing else will wake it: it must be told now.
			if stops == "stalls" {
				c.park(a, true)
			} else {
				c.leave(a)
			}
			require.True(t, poked(b), "b waits for a reader that will not read")
			res, err = c.read(ctx, b, ids[19], 100, base)
			require.NoError(t, err)
			require.False(t, res.wait)
			require.Equal(t, ids[20:], entryIDs(res.entries))
		})
	}
}

func TestCatchUpWaiterRefusedForAHungryReaderIsBoundedByThePatience(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	ids, first := blockLog(t, st, 20)
	ctx, base := context.Background(), ids[19]
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c, a, b := twoReaders(st, first, clk)
	res, err := c.read(ctx, b, first, 4, base)
	require.NoError(t, err)
	require.Len(t, res.entries, 4)
	res, err = c.read(ctx, a, first, 100, base)
	require.NoError(t, err)
	res, err = c.read(ctx, a, res.scanned, 100, base)
	require.NoError(t, err)
	require.True(t, res.wait, "b reads on in the block in memory")
	require.Equal(t, clk.Now().Add(catchUpPatience), res.retryAt,
		"a is poked when b leaves the block, and tries again after the patience at the latest")
	// Whatever the rules expect to wake a waiter, it asks again within the
	// safety retry.
	c.retry = catchUpRetry
	res, err = c.read(ctx, a, ids[9], 100, base)
	require.NoError(t, err)
	require.True(t, res.wait)
	require.Equal(t, clk.Now().Add(catchUpRetry), res.retryAt)
	c.retry = time.Hour

	// b has enough to send and stops reading inside the block: nobody
	// pokes a, which tries again at its retry time and learns when b's
	// patience ends, however long b's requests take.
	clk.Advance(time.Second)
	c.park(b, false)
	require.False(t, poked(a))
	clk.Advance(catchUpPatience - time.Second)
	res, err = c.read(ctx, a, ids[9], 100, base)
	require.NoError(t, err)
	require.True(t, res.wait)
	require.Equal(t, clk.Now().Add(time.Second), res.retryAt, "b's patience ends a second later")
	clk.Advance(time.Second)
	res, err = c.read(ctx, a, ids[9], 100, base)
	require.NoError(t, err)
	require.False(t, res.wait)
	require.Equal(t, ids[10:], entryIDs(res.entries))
}

func TestCatchUpLoadsWithinTheBoundBeforeABlockSizeIsKnown(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	ids, first := blockLog(t, st, 40)
	ctx, base := context.Background(), ids[39]
	c := newCatchUp(st, 10, 1) // room for one block
	c.retry = time.Hour        // the rules' own pokes and times, not the safety retry
	st.gate, st.gateBelow = make(chan struct{}), base
	// Four domains behind, each in its own block, read at once, as when
	// the workers start after a restart: none of the blocks was loaded
	// yet, so their size is unknown.
	type answer struct {
		res logRead
		err error
	}
	answers := make(chan answer, 4)
	for i := range 4 {
		w := catchUpWorker(fmt.Sprintf("d%d.example", i))
		after := first + int64(10*i)
		c.join(w, after)
		go func() {
			res, err := c.read(ctx, w, after, 100, base)
			answers <- answer{res, err}
		}()
	}
	var got []answer
	calls := func() int {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.calls
	}
	eventually(t, func() bool {
		for len(answers) > 0 {
			got = append(got, <-answers)
		}
		return calls()+len(got) == 4
	}, "every reader loads or waits")
	loads := calls()
	close(st.gate)
	for len(got) < 4 {
		got = append(got, <-answers)
	}
	for _, a := range got {
		require.NoError(t, a.err)
	}
	require.Equal(t, 1, loads, "blocks loading at once, with room for one")
}

func TestCatchUpDeliversEverythingOnceThroughPausesFailuresAndARestart(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	st.failCall = func(n int) bool { return n%9 == 4 }
	// Domains drop out of the sweep and come back at different times: a
	// delivery retried, a domain backing off.
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		switch {
		case d.Attempt == 1 && d.Activity.ID%7 == 0:
			return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
		case d.Attempt == 1 && d.Activity.ID%11 == 0:
			return sender.Result{Outcome: sender.Retry, DomainLevel: true, Reason: "connection refused"}
		}
		return sender.Success(202)
	}}
	cfg := catchUpConfig()
	cfg.WindowBytes = 60_000
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	ctx := context.Background()
	ids, want := backlogBehind(t, q, 60, 900, 3)
	for _, d := range []string{"d003.example", "d017.example", "d042.example"} {
		require.NoError(t, q.Pause(ctx, d))
	}
	st.gate, st.gateBelow = make(chan struct{}), ids[len(ids)-1]
	require.NoError(t, q.Start(ctx))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })
	eventually(t, func() bool { return q.workerCount() == 60 }, "a worker per domain")
	close(st.gate)
	delivered := func(n int, msg string) {
		t.Helper()
		if assert.Eventually(t, func() bool { return fake.DeliveredCount() >= n }, 30*time.Second, 2*time.Millisecond, msg) {
			return
		}
		// Say who waits for what.
		t.Log(q.window.catchUp.describe())
		for _, w := range q.workerList() {
			inbox := "https://" + w.domain + "/inbox"
			if s := w.snapshot(); len(fake.Delivered(inbox)) != len(want[inbox]) {
				t.Logf("%s: %s, scanned %d, cursor %d, pending %d, in flight %d, blocked %q, caught up %v, next attempt %v",
					w.domain, s.Status, s.Scanned, s.Cursor, s.Pending, s.InFlight, s.Blocked, s.CaughtUp, s.NextAttemptAt)
			}
		}
		t.FailNow()
	}
	delivered(600, "a third delivered")
	// Mid-sweep: one domain paused, one resumed, and a restart.
	require.NoError(t, q.Pause(ctx, "d005.example"))
	require.NoError(t, q.Resume(ctx, "d003.example"))
	require.NoError(t, q.Stop(ctx))
	require.NoError(t, q.Start(ctx))
	delivered(1200, "two thirds delivered")
	for _, d := range []string{"d005.example", "d017.example", "d042.example"} {
		require.NoError(t, q.Resume(ctx, d))
	}
	delivered(2700, "everything delivered, no domain left waiting")
	requireDeliveredOnce(t, fake, want)
	most, total := st.mostReads(ids)
	t.Logf("each row read at most %d times, %.2f on average; %d reads failed", most, float64(total)/float64(len(ids)), st.failed.Load())
}

func TestCatchUpReadersExtendingTheirBlocksDoNotWaitForEachOther(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	ids, first := blockLog(t, st, 30)
	ctx := context.Background()
	footprint := 0 // of one entry: the log's entries are alike
	{
		acts, err := st.Activities(ctx, first, 1)
		require.NoError(t, err)
		footprint = newEntry(acts[0]).footprint()
	}
	// Room for 16 entries; a whole block of 10 was seen before (the size
	// outlives a restart).
	c := newCatchUp(st, 10, 16*footprint)
	c.retry = time.Hour // the rules' own pokes and times, not the safety retry
	c.estimate, c.sized = 10*footprint, true
	a, b := catchUpWorker("a.example"), catchUpWorker("b.example")
	c.join(a, first)
	c.join(b, first+10)

	// Each loads its block while the window's base is in it: both blocks
	// end early.
	res, err := c.read(ctx, a, first, 100, ids[4])
	require.NoError(t, err)
	require.Equal(t, ids[:5], entryIDs(res.entries))
	res, err = c.read(ctx, b, first+10, 100, ids[14])
	require.NoError(t, err)
	require.Equal(t, ids[10:15], entryIDs(res.entries))

	// The base moved on: each needs the rest of its block, which does not
	// fit beside the other's. Neither needs what the other's block holds
	// any more, nor what its own holds: one of them must go on.
	base := ids[29]
	resA, err := c.read(ctx, a, ids[4], 100, base)
	require.NoError(t, err)
	resB, err := c.read(ctx, b, ids[14], 100, base)
	require.NoError(t, err)
	if resA.wait && resB.wait {
		require.False(t, resA.retryAt.IsZero() && resB.retryAt.IsZero() && !poked(a) && !poked(b),
			"both wait, untimed and unpoked, each for the block the other holds")
	}
}

func TestCatchUpDoesNotRetryItsOwnReadThatTimedOutInTheStore(t *testing.T) {
	t.Parallel()
	st := newRowCountingStore(newMemory())
	ids, first := blockLog(t, st, 10)
	// The store's own timeout (a connection that could not be made in
	// time), not the caller's context: the first 5 reads fail.
	st.failWith = fmt.Errorf("failed to connect: %w", context.DeadlineExceeded)
	st.failCall = func(n int) bool { return n <= 5 }
	c := newCatchUp(st, 10, 1)
	c.retry = time.Hour // the rules' own pokes and times, not the safety retry
	a := catchUpWorker("a.example")
	c.join(a, first)
	_, err := c.read(context.Background(), a, first, 100, ids[9])
	require.ErrorIs(t, err, context.DeadlineExceeded, "the failure goes to the worker, which backs off")
	require.EqualValues(t, 1, st.failed.Load(), "reads of the log, at once, while the store fails")
}

// hangingLog is a store whose reads of the log never answer (a connection
// that died without a word), until their context ends.
type hangingLog struct {
	store.Store
	calls atomic.Int64
}

func (s *hangingLog) Activities(ctx context.Context, _ int64, _ int) ([]store.Activity, error) {
	s.calls.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestCatchUpWaitersDoNotReloadABlockWhoseLoadTimedOut has two domains
// read one block from a store that never answers: the load ends with the
// store timeout and fails both readers, which back off. The one waiting
// for it used to take the timeout for its loader's having stopped, and
// load the block again at once, for another whole timeout: with N domains
// behind, N timeouts in a row.
func TestCatchUpWaitersDoNotReloadABlockWhoseLoadTimedOut(t *testing.T) {
	t.Parallel()
	st := &hangingLog{Store: newMemory()}
	ids, first := blockLog(t, st, 10)
	c, a, b := twoReaders(st, first, nil)
	c.timeout = 200 * time.Millisecond
	aErr := make(chan error, 1)
	go func() {
		_, err := c.read(context.Background(), a, first, 100, ids[9])
		aErr <- err
	}()
	eventually(t, func() bool { return st.calls.Load() == 1 }, "a's load did not start")
	_, err := c.read(context.Background(), b, first, 100, ids[9])
	require.ErrorIs(t, err, context.DeadlineExceeded, "b waits for a's load and gets its failure")
	require.ErrorIs(t, <-aErr, context.DeadlineExceeded)
	require.EqualValues(t, 1, st.calls.Load(), "reads of the log, one after another, while the store does not answer")
}

// describe tells the catch-up's blocks and readers, for a test that failed.
func (c *catchUp) describe() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "loading %d, sized %v, estimate %d, size %d of %d\n", c.loading, c.sized, c.estimate, c.size(), c.maxBytes)
	for _, bl := range c.blocks {
		fmt.Fprintf(&b, "block (%d, %d]: loaded %v, err %v, %d bytes, %d hungry, %d busy\n", bl.lo, bl.hi, bl.loaded(), bl.err, bl.bytes, c.hungry[bl.lo], c.busy[bl.lo])
	}
	for w, r := range c.readers {
		_, waits := c.waiters[r]
		at, extends := c.extending[r]
		fmt.Fprintf(&b, "reader %s: needs %d, state %d, dropped %v, waits %v, extends %v (%d), since %v\n", w.domain, r.need, r.state, r.dropped, waits, extends, at, r.since)
	}
	return b.String()
}

// TestAFailedCatchUpReadIsRetriedWithinBounds fails every read of the log
// for twenty minutes of a domain behind the window, with the default
// backoff: each retry comes within fillRetryMax, however long the outage,
// and the domain delivers within fillRetryMax of the store's return. With
// the delivery backoff (up to an hour) it waited about as long again.
func TestAFailedCatchUpReadIsRetriedWithinBounds(t *testing.T) {
	t.Parallel()
	st := &failingReads{Store: newMemory()}
	fake := &sendertest.Fake{}
	// Enqueued while no queue runs: the window starts above it, so the
	// domain reads it through the catch-up.
	q0, err := New(st, fake, testConfig())
	require.NoError(t, err)
	ids := enqueueAll(t, q0, note(1, "https://a.example/inbox"))

	st.fail.Store(1 << 40) // down
	clk := clock.NewFake(epoch)
	cfg := testConfig()
	cfg.BackoffMin, cfg.BackoffMax = BackoffMinDefault, BackoffMaxDefault
	cfg.PollInterval = PollIntervalDefault
	cfg.clock = clk
	startQueue(t, st, fake, cfg)

	// The earliest timer of the fake clock: the worker's retry, or an
	// earlier one.
	next := func() time.Duration {
		var in time.Duration
		eventually(t, func() bool {
			at, ok := clk.NextDeadline()
			in = at.Sub(clk.Now())
			return ok && in > 0
		}, "no timer armed")
		return in
	}
	for outage := time.Duration(0); outage < 20*time.Minute; {
		d := next()
		require.LessOrEqual(t, d, fillRetryMax, "%v into the outage", outage)
		clk.Advance(d)
		outage += d
	}
	st.fail.Store(0) // back
	clk.Advance(fillRetryMax)
	eventually(t, func() bool { return slices.Contains(fake.Delivered("https://a.example/inbox"), ids[0]) },
		"not delivered within %v of the store's return", fillRetryMax)
}

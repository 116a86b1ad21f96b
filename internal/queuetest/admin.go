// Package queuetest holds queue tests that every store must pass, run by
// the tests of each store package: they drive a queue, not the store alone
// (see store/storetest for the store contract).
package queuetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

const (
	waitFor = 10 * time.Second
	tick    = 2 * time.Millisecond
	// holdFor is how long a change must hold while the owner checkpoints
	// and renews (every 20 ms and 200 ms).
	holdFor = 450 * time.Millisecond
)

// mode is what the fake receiver answers.
type mode int32

const (
	accept   mode = iota
	down          // connection refused: the domain backs off as a whole
	gone          // 410 from the shared inbox: the domain is dead
	refuse        // 422: a dead letter
	slowHead      // 500 for ever to the activity about stuckObject, the rest accepted
)

// stuckObject is the object of the activity slowHead never accepts.
const stuckObject = "https://local.example/notes/stuck"

type fixture struct {
	t     *testing.T
	st    store.Store
	fake  *sendertest.Fake
	mode  atomic.Int32
	owner *queue.Queue
	admin *queue.Queue
	n     int
	// adminEvents are the events the admin's queue observed.
	adminMu     sync.Mutex
	adminEvents []queue.Event
}

const inbox = "https://a.example/inbox"

func newFixture(t *testing.T, st store.Store) *fixture {
	f := &fixture{t: t, st: st}
	f.fake = &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		switch mode(f.mode.Load()) {
		case down:
			return sender.Result{Outcome: sender.Retry, DomainLevel: true, Reason: "connection refused"}
		case gone:
			return sender.Result{Outcome: sender.DomainGone, Status: 410, Reason: "410 Gone"}
		case refuse:
			return sender.Result{Outcome: sender.Permanent, Status: 422, Reason: "422 Unprocessable Entity"}
		case slowHead:
			if bytes.Contains(d.Activity.Body, []byte(stuckObject)) {
				return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
			}
		}
		return sender.Success(202)
	}}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := &queue.Config{
		OwnerID: "owner", LeaseTTL: 600 * time.Millisecond, CheckpointInterval: 20 * time.Millisecond,
		BackoffMin: time.Hour, BackoffMax: time.Hour, BackoffJitter: -1, MaxAttempts: 1 << 30,
		PollInterval: 20 * time.Millisecond, SummaryInterval: -1, Logger: logger,
	}
	var err error
	f.owner, err = queue.New(st, f.fake, cfg)
	require.NoError(t, err)
	require.NoError(t, f.owner.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, f.owner.Stop(ctx))
	})
	// The admin's process holds no domain: it never starts.
	f.admin, err = queue.New(st, &sendertest.Fake{}, &queue.Config{OwnerID: "admin", Logger: logger,
		Observer: queue.ObserverFunc(func(_ context.Context, e queue.Event) {
			f.adminMu.Lock()
			defer f.adminMu.Unlock()
			f.adminEvents = append(f.adminEvents, e)
		})})
	require.NoError(t, err)
	return f
}

// never fails the test if bad is true at any check within holdFor.
// Unlike require.Never it checks in the test's goroutine, so no check is
// left running once it returns: one left running would read the store
// after the test's cleanup closed it, and fail the test.
func never(t *testing.T, bad func() bool, msg string) {
	t.Helper()
	for end := time.Now().Add(holdFor); time.Now().Before(end); time.Sleep(tick) {
		require.False(t, bad(), msg)
	}
	require.False(t, bad(), msg)
}

// enqueue appends n activities to the domain, each with its own object;
// with stuck, the first one is about stuckObject.
func (f *fixture) enqueue(n int, stuck ...bool) []int64 {
	return f.enqueueBy(f.owner, n, stuck...)
}

// enqueueBy is enqueue through q.
func (f *fixture) enqueueBy(q *queue.Queue, n int, stuck ...bool) []int64 {
	var acts []queue.Activity
	for i := range n {
		f.n++
		object := fmt.Sprintf("https://local.example/notes/%d", f.n)
		if i == 0 && len(stuck) > 0 && stuck[0] {
			object = stuckObject
		}
		acts = append(acts, queue.Activity{
			Body:    fmt.Appendf(nil, `{"id":"https://local.example/activities/%d","type":"Create","actor":"https://local.example/users/alice","object":%q}`, f.n, object),
			Inboxes: []string{inbox},
		})
	}
	ids, err := q.EnqueueMany(context.Background(), acts)
	require.NoError(f.t, err)
	return ids
}

// known reports whether the store knows the domain.
func (f *fixture) known() bool {
	states, err := f.st.Domains(context.Background(), []string{"a.example"})
	require.NoError(f.t, err)
	return len(states) == 1
}

// dropped returns the activity IDs the admin's queue reported as dropped
// for a suspended domain.
func (f *fixture) dropped() []int64 {
	f.adminMu.Lock()
	defer f.adminMu.Unlock()
	var out []int64
	for _, e := range f.adminEvents {
		if e.Kind == queue.EventSuspendedDropped {
			require.Equal(f.t, "a.example", e.Domain)
			out = append(out, e.ActivityID)
		}
	}
	return out
}

func (f *fixture) saved() store.DomainState {
	states, err := f.st.Domains(context.Background(), []string{"a.example"})
	require.NoError(f.t, err)
	require.Len(f.t, states, 1)
	return states[0]
}

func (f *fixture) local() queue.DomainStats {
	st, err := f.owner.Stats(context.Background())
	require.NoError(f.t, err)
	for _, d := range st.Domains {
		if d.Domain == "a.example" && d.Local {
			return d
		}
	}
	return queue.DomainStats{}
}

func (f *fixture) delivered() int { return len(f.fake.Delivered(inbox)) }

// AdminFromAnotherProcess runs every admin operation from a second queue
// on the same store while the owner delivers to the domain, and checks that
// the owner takes the change in and never undoes it: the saved state keeps
// it through the owner's checkpoints and renewals, and the owner sends
// nothing the change removed.
func AdminFromAnotherProcess(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := context.Background()
	t.Run("PauseAndResume", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, newStore(t))
		f.enqueue(5)
		require.Eventually(t, func() bool { return f.delivered() == 5 }, waitFor, tick)
		require.NoError(t, f.admin.Pause(ctx, "a.example"))
		require.Eventually(t, func() bool { return f.local().Status == store.StatusPaused }, waitFor, tick, "the owner takes the pause in")
		f.enqueue(5)
		never(t, func() bool { return f.delivered() > 5 || f.saved().Status != store.StatusPaused },
			"the owner sent to a paused domain or undid the pause")
		require.NoError(t, f.admin.Resume(ctx, "a.example"))
		require.Eventually(t, func() bool { return f.delivered() == 10 }, waitFor, tick, "the backlog goes out after Resume")
	})
	t.Run("RetryNow", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, newStore(t))
		f.mode.Store(int32(down))
		f.enqueue(1)
		require.Eventually(t, func() bool { return f.saved().FailCount == 1 }, waitFor, tick, "backing off an hour")
		f.mode.Store(int32(accept))
		require.NoError(t, f.admin.RetryNow(ctx, "a.example"))
		require.Eventually(t, func() bool { return f.delivered() == 1 }, waitFor, tick, "the owner retries at once")
		require.Eventually(t, func() bool { return f.saved().FailCount == 0 }, waitFor, tick)
	})
	t.Run("SkipToHead", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, newStore(t))
		f.mode.Store(int32(slowHead))
		ids := f.enqueue(50, true)
		require.Eventually(t, func() bool { return f.delivered() == 49 }, waitFor, tick, "the owner runs ahead of its stuck head")
		skipped, err := f.admin.SkipToHead(ctx, "a.example")
		require.NoError(t, err)
		require.Positive(t, skipped)
		head := ids[len(ids)-1]
		require.Eventually(t, func() bool { return f.local().Cursor >= head }, waitFor, tick, "the owner takes the skip in")
		attempts := len(f.fake.Calls())
		never(t, func() bool { return f.saved().Cursor < head || len(f.fake.Calls()) > attempts },
			"the owner moved the cursor back or sent what was skipped")
		later := f.enqueue(1)
		require.Eventually(t, func() bool { return f.saved().Cursor == later[0] }, waitFor, tick, "delivery goes on after the skip")
	})
	t.Run("MarkAlive", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, newStore(t))
		f.mode.Store(int32(gone))
		f.enqueue(1)
		require.Eventually(t, func() bool { return f.saved().Status == store.StatusDead }, waitFor, tick, "marked dead")
		f.mode.Store(int32(accept))
		require.NoError(t, f.admin.MarkAlive(ctx, "a.example"))
		require.Eventually(t, func() bool { return f.delivered() == 1 }, waitFor, tick, "the backlog is delivered")
		never(t, func() bool { return f.saved().Status != store.StatusActive }, "the owner undid MarkAlive")
	})
	t.Run("SuspendAndUnsuspend", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, newStore(t))
		f.enqueue(2)
		require.Eventually(t, func() bool { return f.delivered() == 2 }, waitFor, tick)
		_, err := f.admin.Suspend(ctx, "a.example")
		require.NoError(t, err)
		require.Eventually(t, func() bool { return f.local().Status == store.StatusSuspended }, waitFor, tick, "the owner takes the suspension in")

		// Enqueued by a process that does not work the domain: dropped
		// there, in plain sight, and never delivered.
		ids := f.enqueueBy(f.admin, 3)
		// The Observer is called from the queue's own goroutine: wait for it.
		require.Eventually(t, func() bool { return slices.Equal(ids, f.dropped()) }, waitFor, tick, "the enqueuing process reports each drop")
		never(t, func() bool { return f.delivered() > 2 || f.saved().Status != store.StatusSuspended },
			"the owner sent to a suspended domain or undid the suspension")
		res, err := f.st.Prune(ctx)
		require.NoError(t, err)
		require.GreaterOrEqual(t, res.Below, ids[2], "the suspended domain holds back retention")
		require.ErrorIs(t, f.admin.Resume(ctx, "a.example"), queue.ErrSuspended)
		require.ErrorIs(t, f.admin.Pause(ctx, "a.example"), queue.ErrSuspended)

		require.NoError(t, f.admin.Unsuspend(ctx, "a.example"))
		require.ErrorIs(t, f.admin.Unsuspend(ctx, "a.example"), queue.ErrNotSuspended)
		later := f.enqueueBy(f.admin, 1)
		require.Len(t, f.dropped(), 3, "an activity for a domain no longer suspended was reported dropped")
		require.Eventually(t, func() bool { return f.delivered() == 3 }, waitFor, tick, "delivery resumes after Unsuspend")
		require.Equal(t, later[0], f.fake.Delivered(inbox)[2], "what was enqueued while suspended was sent")
	})
	t.Run("SuspendedIsNotProbed", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, newStore(t))
		f.mode.Store(int32(gone))
		f.enqueue(1)
		require.Eventually(t, func() bool { return f.saved().Status == store.StatusDead }, waitFor, tick, "marked dead")
		calls := len(f.fake.Calls())
		f.mode.Store(int32(accept))
		_, err := f.admin.Suspend(ctx, "a.example")
		require.NoError(t, err)
		require.Eventually(t, func() bool { return f.local().Status == store.StatusSuspended }, waitFor, tick)
		// A probe due now, and an activity to probe with.
		require.NoError(t, f.admin.RetryNow(ctx, "a.example"))
		f.enqueue(1)
		never(t, func() bool { return len(f.fake.Calls()) > calls || f.saved().Status != store.StatusSuspended },
			"a suspended domain was probed or revived")
	})
	t.Run("Forget", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, newStore(t))
		f.mode.Store(int32(refuse))
		f.enqueue(1)
		require.Eventually(t, func() bool {
			dls, err := f.admin.DeadLetters(ctx, store.DeadLetterFilter{Domain: "a.example"})
			require.NoError(t, err)
			return len(dls) == 1
		}, waitFor, tick, "a dead letter")
		f.mode.Store(int32(accept))
		f.enqueue(1)
		require.Eventually(t, func() bool { return f.saved().Cursor == 2 && f.delivered() == 1 }, waitFor, tick)

		require.NoError(t, f.admin.Forget(ctx, "a.example"))
		require.ErrorIs(t, f.admin.Forget(ctx, "a.example"), store.ErrNotFound)
		require.Eventually(t, func() bool { return f.local().Domain == "" }, waitFor, tick, "the owner stops working the forgotten domain")
		never(t, f.known, "the owner saved the forgotten domain back")
		dls, err := f.admin.DeadLetters(ctx, store.DeadLetterFilter{Domain: "a.example"})
		require.NoError(t, err)
		require.Len(t, dls, 1, "the dead letters of a forgotten domain are kept")

		// Addressed again, it is a new domain: delivered to from there on.
		later := f.enqueueBy(f.admin, 1)
		require.Eventually(t, func() bool { return f.delivered() == 2 }, waitFor, tick, "the domain addressed again is delivered to")
		require.Equal(t, later[0], f.fake.Delivered(inbox)[1])
		require.Eventually(t, func() bool { return f.saved().Cursor == later[0] }, waitFor, tick)
	})
	t.Run("RequeueAndDiscardDeadLetters", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, newStore(t))
		f.mode.Store(int32(refuse))
		f.enqueue(2)
		var dls []store.DeadLetter
		require.Eventually(t, func() bool {
			var err error
			dls, err = f.admin.DeadLetters(ctx, store.DeadLetterFilter{Domain: "a.example"})
			require.NoError(t, err)
			return len(dls) == 2
		}, waitFor, tick, "two dead letters")
		f.mode.Store(int32(accept))
		newIDs, err := f.admin.RequeueDeadLetters(ctx, dls[0].ID)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return f.delivered() == 1 }, waitFor, tick, "the requeued activity is delivered")
		n, err := f.admin.DiscardDeadLetters(ctx, dls[1].ID)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		never(t, func() bool {
			left, err := f.admin.DeadLetters(ctx, store.DeadLetterFilter{Domain: "a.example"})
			require.NoError(t, err)
			return len(left) > 0 || f.delivered() > 1
		}, "a dead letter came back or the requeued activity was sent twice")
		require.Equal(t, []int64{newIDs[0]}, f.fake.Delivered(inbox))
	})
}

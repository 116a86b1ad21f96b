package queue

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
)

func TestRestartAfterCrashResendsAtMostTheCheckpointWindow(t *testing.T) {
	t.Parallel()
	st := newMemory()
	const inbox = "https://a.example/inbox"
	var freezeAt atomic.Int64
	first := &sendertest.Fake{}
	first.Handler = func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Activity.ID >= freezeAt.Load() {
			<-ctx.Done() // the process hangs here until it "crashes"
			return sender.Result{Outcome: sender.Retry, Reason: "cancelled"}
		}
		return sender.Success(202)
	}
	cfg := testConfig()
	cfg.MaxInFlightPerDomain = 1
	cfg.CheckpointInterval = time.Hour // only the delivery count triggers checkpoints
	cfg.CheckpointDeliveries = 10
	cfg.LeaseTTL = 300 * time.Millisecond // the takeover waits for it
	q1, err := New(st, first, cfg)
	require.NoError(t, err)
	var acts []Activity
	for i := range 100 {
		acts = append(acts, note(i, inbox))
	}
	ids := enqueueAll(t, q1, acts...)
	freezeAt.Store(ids[55])
	require.NoError(t, q1.Start(context.Background()))
	eventually(t, func() bool { return len(first.Delivered(inbox)) == 55 }, "55 delivered before the crash")
	// Checkpoints are written in the background; let the one for the 50th
	// delivery land, then crash.
	eventually(t, func() bool { return domainState(t, st, "a.example").Cursor >= ids[49] }, "checkpoints taken every 10 deliveries")
	q1.kill() // no Stop: no final checkpoint, no lease release
	saved := domainState(t, st, "a.example").Cursor

	// The next process takes over once the dead one's lease expires.
	second := &sendertest.Fake{}
	cfg2 := testConfig()
	cfg2.LeaseTTL = 300 * time.Millisecond
	cfg2.MaxInFlightPerDomain = 1
	startQueue(t, st, second, cfg2)
	eventually(t, func() bool { return domainState(t, st, "a.example").Cursor == ids[99] }, "the second process finishes the backlog")

	delivered := map[int64]int{}
	for _, id := range first.Delivered(inbox) {
		delivered[id]++
	}
	resent := 0
	for _, id := range second.Delivered(inbox) {
		if delivered[id] > 0 {
			resent++
		}
		delivered[id]++
	}
	for _, id := range ids {
		require.Positive(t, delivered[id], "activity %d never delivered", id)
	}
	require.Equal(t, int(ids[54]-saved), resent, "exactly the deliveries after the last checkpoint are re-sent")
	require.LessOrEqual(t, resent, cfg.CheckpointDeliveries, "re-sends bounded by the checkpoint window")
	require.Equal(t, ids[55:], second.Delivered(inbox)[resent:], "the rest arrives once, in order")
}

func TestGracefulStopSavesEveryCursor(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	cfg := testConfig()
	cfg.CheckpointInterval = time.Hour // only Stop saves
	cfg.CheckpointDeliveries = 1 << 20
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	require.NoError(t, q.Start(context.Background()))
	domains := []string{"a.example", "b.example", "c.example", "d.example"}
	var acts []Activity
	for i := range 40 {
		acts = append(acts, note(i, "https://"+domains[i%4]+"/inbox"))
	}
	ids := enqueueAll(t, q, acts...)
	eventually(t, func() bool { return fake.DeliveredCount() == 40 }, "all delivered")
	require.NoError(t, q.Stop(context.Background()))
	for _, d := range domains {
		s := domainState(t, st, d)
		// The cursor also passes activities not addressed to the domain.
		require.Equal(t, ids[39], s.Cursor, "cursor of %s saved by Stop", d)
		require.Empty(t, s.Owner, "lease of %s released", d)
	}
	require.ErrorIs(t, q.Stop(context.Background()), ErrNotStarted)
}

func TestStopWaitsForInFlightThenCancels(t *testing.T) {
	t.Parallel()
	st := newMemory()
	release := make(chan struct{})
	var started atomic.Int32
	var cancelled atomic.Int32
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		started.Add(1)
		if d.Domain == "stuck.example" {
			<-ctx.Done()
			cancelled.Add(1)
			return sender.Result{Outcome: sender.Retry, Reason: "cancelled"}
		}
		<-release
		return sender.Success(202)
	}}
	q, err := New(st, fake, testConfig())
	require.NoError(t, err)
	require.NoError(t, q.Start(context.Background()))
	ids := enqueueAll(t, q, note(1, "https://slow.example/inbox"), note(2, "https://stuck.example/inbox"))
	eventually(t, func() bool { return started.Load() == 2 }, "both requests in flight")

	go func() {
		time.Sleep(50 * time.Millisecond) // the slow receiver answers while Stop waits
		close(release)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.NoError(t, q.Stop(ctx))
	require.Equal(t, int32(1), cancelled.Load(), "the request still running at the deadline is cancelled")
	require.Equal(t, ids[1], domainState(t, st, "slow.example").Cursor, "the answer that came in time is saved")
	stuck := domainState(t, st, "stuck.example")
	require.Equal(t, ids[1]-1, stuck.Cursor, "the cancelled delivery is not settled")
	require.Zero(t, stuck.FailCount, "a cancellation by Stop is not the domain's failure")
}

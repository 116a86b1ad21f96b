package queue

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
)

// observe records the order in which the worker dispatches first attempts.
func (k *keyTracker) observe(_ context.Context, e Event) {
	if e.Kind == EventDispatched && e.Attempt == 1 {
		k.mu.Lock()
		k.firstSends = append(k.firstSends, e.ActivityID)
		k.mu.Unlock()
	}
}

// keyTracker records, per ordering key, which activities were in flight and
// in which order they were sent and finished.
type keyTracker struct {
	mu         sync.Mutex
	keyOf      map[string]string // body -> ordering key
	inFlight   map[string]int64
	violations []string
	firstSends []int64
	finished   map[string][]int64
}

func newKeyTracker() *keyTracker {
	return &keyTracker{keyOf: map[string]string{}, inFlight: map[string]int64{}, finished: map[string][]int64{}}
}

func (k *keyTracker) handler(delay func(id int64) time.Duration) func(ctx context.Context, d *sender.Delivery) sender.Result {
	return func(ctx context.Context, d *sender.Delivery) sender.Result {
		id := d.Activity.ID
		k.mu.Lock()
		key := k.keyOf[string(d.Activity.Body)]
		if other, busy := k.inFlight[key]; busy {
			k.violations = append(k.violations, fmt.Sprintf("%d sent while %d (same key %s) in flight", id, other, key))
		}
		k.inFlight[key] = id
		k.mu.Unlock()
		select {
		case <-time.After(delay(id)): // simulated network latency
		case <-ctx.Done():
		}
		k.mu.Lock()
		delete(k.inFlight, key)
		k.finished[key] = append(k.finished[key], id)
		k.mu.Unlock()
		return sender.Success(202)
	}
}

func TestOrderingPerDomainAndKeyWithManyInFlight(t *testing.T) {
	t.Parallel()
	st := newMemory()
	tracker := newKeyTracker()
	fake := &sendertest.Fake{}
	// Varying latencies make later requests finish before earlier ones.
	fake.Handler = tracker.handler(func(id int64) time.Duration { return time.Duration(id%5) * time.Millisecond })
	cfg := testConfig()
	cfg.MaxInFlightPerDomain = 4
	cfg.Observer = ObserverFunc(tracker.observe)
	q := startQueue(t, st, fake, cfg)

	const inbox = "https://a.example/inbox"
	var acts []Activity
	tracker.mu.Lock()
	for i := range 60 {
		a := keyed(i, fmt.Sprintf("key-%d", i%6), inbox)
		tracker.keyOf[string(a.Body)] = a.OrderingKey
		acts = append(acts, a)
	}
	tracker.mu.Unlock()
	ids := enqueueAll(t, q, acts...)

	eventually(t, func() bool { return len(fake.Delivered(inbox)) == len(ids) }, "every activity delivered")
	require.NoError(t, q.Stop(context.Background()), "stop, so that the Observer has seen every event")
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	require.Empty(t, tracker.violations, "two activities with one ordering key in flight at once")
	require.Equal(t, ids, tracker.firstSends, "first attempts are dispatched in ID order")
	for key, got := range tracker.finished {
		for i := 1; i < len(got); i++ {
			require.Less(t, got[i-1], got[i], "key %s delivered out of order: %v", key, got)
		}
	}
	require.Greater(t, fake.MaxInFlight("a.example"), 1, "requests overlap")
	require.LessOrEqual(t, fake.MaxInFlight("a.example"), 4)
}

func TestSerialWhenMaxInFlightIsOne(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		time.Sleep(time.Millisecond) // simulated latency, so overlap would show
		return sender.Success(200)
	}}
	cfg := testConfig()
	cfg.MaxInFlightPerDomain = 1
	q := startQueue(t, st, fake, cfg)
	var acts []Activity
	for i := range 20 {
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	ids := enqueueAll(t, q, acts...)
	eventually(t, func() bool { return fake.DeliveredCount() == len(ids) }, "all delivered")
	require.Equal(t, 1, fake.MaxInFlight("a.example"))
	require.Equal(t, ids, fake.Delivered("https://a.example/inbox"), "strictly in ID order")
}

func TestSlowDomainDoesNotDelayOthers(t *testing.T) {
	t.Parallel()
	st := newMemory()
	release := make(chan struct{})
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Domain == "slow.example" {
			select {
			case <-release:
			case <-ctx.Done():
				return sender.Result{Outcome: sender.Retry, Reason: "cancelled"}
			}
		}
		return sender.Success(202)
	}}
	q := startQueue(t, st, fake, testConfig())
	var acts []Activity
	for i := range 50 {
		acts = append(acts, note(i, "https://slow.example/inbox", "https://fast.example/inbox", "https://other.example/inbox"))
	}
	ids := enqueueAll(t, q, acts...)
	eventually(t, func() bool {
		return len(fake.Delivered("https://fast.example/inbox")) == len(ids) && len(fake.Delivered("https://other.example/inbox")) == len(ids)
	}, "the healthy domains get everything while the slow one holds its requests")
	require.Empty(t, fake.Delivered("https://slow.example/inbox"))
	close(release)
	eventually(t, func() bool { return len(fake.Delivered("https://slow.example/inbox")) == len(ids) }, "the slow domain catches up")
}

func TestCursorAdvancesOnlyOverContiguousSettledIDs(t *testing.T) {
	t.Parallel()
	st := newMemory()
	release := make(chan struct{})
	var first int64
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Activity.ID == first {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return sender.Success(202)
	}}
	cfg := testConfig()
	cfg.MaxInFlightPerDomain = 4
	cfg.CheckpointInterval = time.Hour // checkpoints below are explicit
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	ids, err := q.EnqueueMany(context.Background(), []Activity{note(1, "https://a.example/inbox"), note(2, "https://a.example/inbox"), note(3, "https://a.example/inbox"), note(4, "https://a.example/inbox")})
	require.NoError(t, err)
	first = ids[0]
	require.NoError(t, q.Start(context.Background()))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })

	eventually(t, func() bool { return len(fake.Delivered("https://a.example/inbox")) == 3 }, "the three later activities complete first")
	w := q.workerList()[0]
	eventually(t, func() bool {
		return w.snapshot().Delivered == 3
	}, "results handled")
	require.NoError(t, q.checkpoints.save(context.Background()))
	require.Equal(t, ids[0]-1, domainState(t, st, "a.example").Cursor, "the cursor waits for the first activity")

	close(release)
	eventually(t, func() bool {
		return w.snapshot().Cursor == ids[3]
	}, "the cursor jumps over every settled ID")
	require.NoError(t, q.checkpoints.save(context.Background()))
	require.Equal(t, ids[3], domainState(t, st, "a.example").Cursor)
}

package queue

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender/sendertest"
)

// eventLog is an Observer that records every event it is given.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) Observe(_ context.Context, e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

// of returns the recorded events of the given kind.
func (l *eventLog) of(kind EventKind) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, e := range l.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func TestBlockingObserverDoesNotStallDeliveries(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	var once sync.Once
	var cancelled atomic.Bool
	cfg := testConfig()
	cfg.ObserverBuffer = 4
	cfg.Observer = ObserverFunc(func(ctx context.Context, e Event) {
		once.Do(func() { close(entered) })
		<-ctx.Done() // blocks until Stop gives up on it
		cancelled.Store(true)
	})
	fake := &sendertest.Fake{}
	q := startQueue(t, newMemory(), fake, cfg)
	var acts []Activity
	for i := range 50 {
		acts = append(acts, note(i, "https://a.example/inbox", "https://b.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	<-entered
	eventually(t, func() bool { return fake.DeliveredCount() == 100 }, "every delivery goes out while the Observer blocks")
	// 200 dispatched and delivered events, one taken by the observer, at
	// most two buffers' worth waiting. A worker may still be waiting for
	// room when the last request returns (the requests in flight go on
	// while it waits), so its last events come after the deliveries.
	var st Stats
	eventually(t, func() bool {
		var err error
		st, err = q.Stats(context.Background())
		require.NoError(t, err)
		return st.ObserverDropped >= int64(200-1-2*cfg.ObserverBuffer)
	}, "the events that did not fit are dropped and counted")
	require.Zero(t, st.ObserverPanics)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.NoError(t, q.Stop(ctx), "Stop returns at its deadline with the Observer still blocked")
	eventually(t, cancelled.Load, "the Observer's context is cancelled once Stop gives up on it")
}

func TestSlowObserverLosesNoEvent(t *testing.T) {
	t.Parallel()
	log := &eventLog{}
	cfg := testConfig()
	cfg.ObserverBuffer = 2
	cfg.Observer = ObserverFunc(func(ctx context.Context, e Event) {
		time.Sleep(100 * time.Microsecond) // slower than the workers
		log.Observe(ctx, e)
	})
	fake := &sendertest.Fake{}
	q, err := New(newMemory(), fake, cfg)
	require.NoError(t, err)
	q.events.stall = time.Hour // slow, never blocked, however slow the machine
	require.NoError(t, q.Start(context.Background()))
	var acts []Activity
	for i := range 50 {
		acts = append(acts, note(i, "https://a.example/inbox", "https://b.example/inbox", "https://c.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	eventually(t, func() bool { return fake.DeliveredCount() == 150 }, "delivered")
	require.NoError(t, q.Stop(context.Background()))
	require.Len(t, log.of(EventDispatched), 150, "every event reaches a slow observer: the workers wait for room")
	require.Len(t, log.of(EventDelivered), 150)
	st, err := q.Stats(context.Background())
	require.NoError(t, err)
	require.Zero(t, st.ObserverDropped)
}

func TestPanickingObserverDoesNotCrashTheQueue(t *testing.T) {
	t.Parallel()
	var delivered atomic.Int32
	cfg := testConfig()
	cfg.Observer = ObserverFunc(func(_ context.Context, e Event) {
		if e.Kind == EventDispatched {
			panic("observer bug")
		}
		if e.Kind == EventDelivered {
			delivered.Add(1)
		}
	})
	fake := &sendertest.Fake{}
	q := startQueue(t, newMemory(), fake, cfg)
	var acts []Activity
	for i := range 20 {
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	eventually(t, func() bool { return fake.DeliveredCount() == 20 }, "delivered despite the panics")
	require.NoError(t, q.Stop(context.Background()))
	require.Equal(t, int32(20), delivered.Load(), "the events after a panic are observed")
	st, err := q.Stats(context.Background())
	require.NoError(t, err)
	require.Equal(t, int64(20), st.ObserverPanics, "every panic is recovered and counted")
	require.Zero(t, st.ObserverDropped)
}

func TestObserverSeesEachDomainsEventsInOrder(t *testing.T) {
	t.Parallel()
	log := &eventLog{}
	cfg := testConfig()
	cfg.MaxInFlightPerDomain = 1
	cfg.Observer = log
	fake := &sendertest.Fake{}
	q := startQueue(t, newMemory(), fake, cfg)
	var acts []Activity
	for i := range 30 {
		acts = append(acts, note(i, "https://a.example/inbox", "https://b.example/inbox"))
	}
	ids := enqueueAll(t, q, acts...)
	eventually(t, func() bool { return fake.DeliveredCount() == 60 }, "delivered")
	require.NoError(t, q.Stop(context.Background()), "Stop waits for the Observer to see the last events")
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, dom := range []string{"a.example", "b.example"} {
		var got []Event
		for _, e := range log.events {
			if e.Domain == dom {
				got = append(got, e)
			}
		}
		require.Len(t, got, 2*len(ids), dom)
		for i, id := range ids { // one request at a time: dispatched, delivered, next
			require.Equal(t, EventDispatched, got[2*i].Kind, dom)
			require.Equal(t, id, got[2*i].ActivityID, dom)
			require.Equal(t, EventDelivered, got[2*i+1].Kind, dom)
			require.Equal(t, id, got[2*i+1].ActivityID, dom)
		}
	}
}

func TestInvalidObserverBuffer(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.ObserverBuffer = -1
	_, err := New(newMemory(), &sendertest.Fake{}, cfg)
	require.ErrorContains(t, err, "ObserverBuffer must be positive")
}

// BenchmarkObserve measures what handing an event to the Observer costs a
// worker, with an observer that only counts.
func BenchmarkObserve(b *testing.B) {
	var seen atomic.Int64
	n := newNotifier(ObserverFunc(func(context.Context, Event) { seen.Add(1) }), ObserverBufferDefault, quietLogger())
	e := Event{Kind: EventDelivered, Domain: "a.example", Inbox: "https://a.example/inbox", ActivityID: 1}
	b.ReportAllocs()
	for b.Loop() {
		n.push(e)
	}
	n.flush(context.Background())
	b.ReportMetric(float64(n.dropped.Load())/float64(b.N), "dropped/op")
}

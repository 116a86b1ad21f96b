package queue

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/store"
)

// EventKind says what an Event reports.
type EventKind int

const (
	// EventDispatched: an attempt was handed to the sender.
	EventDispatched EventKind = iota + 1
	// EventDelivered: the inbox accepted the activity.
	EventDelivered
	// EventRetry: the attempt failed and will be retried at RetryAt.
	EventRetry
	// EventDeadLetter: the delivery failed for good and was recorded.
	EventDeadLetter
	// EventDomainStatus: the domain's status changed to Status.
	EventDomainStatus
	// EventSuspendedDropped: an activity enqueued (ActivityID; 0 when
	// enqueued in a transaction whose store numbers it at commit) names
	// Domain, which is suspended: it is not delivered there. Reported by
	// the enqueuing process, once per activity and domain; for EnqueueTx,
	// when it returns, before the caller's transaction commits or rolls
	// back (an activity of a transaction that rolls back is reported too).
	EventSuspendedDropped
	// EventInboxGone: a personal inbox (not the domain's shared inbox)
	// answered 404 Not Found or 410 Gone, so its recipient is gone: the
	// server may drop that follower. Inbox, Domain and ActivityID name the
	// delivery, which is dead-lettered with a reason starting with
	// InboxGoneReason (an EventDeadLetter follows); the domain's health is
	// not affected.
	EventInboxGone
)

// InboxGoneReason starts the reason of a dead letter recorded because its
// inbox is gone (see EventInboxGone).
const InboxGoneReason = "inbox gone: "

func (k EventKind) String() string {
	switch k {
	case EventDispatched:
		return "dispatched"
	case EventDelivered:
		return "delivered"
	case EventRetry:
		return "retry"
	case EventDeadLetter:
		return "dead_letter"
	case EventDomainStatus:
		return "domain_status"
	case EventSuspendedDropped:
		return "suspended_dropped"
	case EventInboxGone:
		return "inbox_gone"
	}
	return "unknown"
}

// Event describes one thing that happened to a delivery or a domain.
type Event struct {
	Kind       EventKind
	Domain     string
	Inbox      string
	ActivityID int64
	// Attempt is the attempt's number, from 1.
	Attempt int
	// HTTPStatus is the receiver's status code, 0 when there was none.
	HTTPStatus int
	// Reason explains a failure or a status change.
	Reason string
	// Latency is how long the attempt took (delivery events).
	Latency time.Duration
	// RetryAt is when a failed delivery will be tried again (EventRetry).
	RetryAt time.Time
	// Status is the domain's new status (EventDomainStatus).
	Status store.DomainStatus
}

// Observer receives the queue's events, for metrics (Prometheus,
// OpenTelemetry) and for the server to act on (EventInboxGone), without
// apqueue depending on them.
//
// The queue calls Observe from one goroutine of its own, never from a
// worker: the events are queued (up to Config.ObserverBuffer of them) and
// handed over one at a time, in the order they happened, so the events of
// one domain arrive in the order its worker produced them. Observe may be
// slow or block, and may call the queue's methods:
//   - while the buffer has room, deliveries do not wait for it;
//   - with the buffer full, a worker waits for room as long as the
//     observer makes progress, so a slow observer slows delivery down to
//     its own pace rather than lose events;
//   - once it has taken no event for 250 ms with the buffer full, it is
//     taken for blocked: events are dropped, counted (Stats.ObserverDropped)
//     and warned about in the log, until it takes one again.
//
// A panic in Observe is recovered, logged and counted
// (Stats.ObserverPanics); the next event is handed over as usual. Stop
// waits for the events emitted before it returns to be observed, up to its
// deadline.
//
// ctx ends when Stop gives up waiting for the observer (its deadline
// passed); an observer that does I/O should honour it.
type Observer interface {
	Observe(ctx context.Context, e Event)
}

// ObserverFunc adapts a function to the Observer interface.
type ObserverFunc func(ctx context.Context, e Event)

// Observe calls f(ctx, e).
func (f ObserverFunc) Observe(ctx context.Context, e Event) { f(ctx, e) }

// observe reports e if an Observer is configured. It never blocks.
func (q *Queue) observe(e Event) {
	if q.events != nil {
		q.events.push(e)
	}
}

// observerStall is how long the Observer may make no progress, with its
// buffer full, before the queue takes it for blocked and drops events
// rather than wait for room.
const observerStall = 250 * time.Millisecond

// notifier hands events to the Observer from its own goroutine, so that an
// observer that blocks or panics cannot stall or crash a worker. Up to
// limit events wait; when they are that many, an event waits for room
// while the observer makes progress (a slow observer slows the workers a
// little rather than lose events), and is dropped once the observer has
// made none for n.stall (a blocked one). The goroutine runs only
// while there are events to hand over.
type notifier struct {
	obs    Observer
	limit  int
	stall  time.Duration // observerStall; tests change it
	logger *slog.Logger

	mu       sync.Mutex
	queued   []queuedEvent // from head on
	head     int
	running  bool
	idle     chan struct{} // closed when the goroutine has exited
	room     chan struct{} // closed when an event is taken, if someone waits
	waiting  bool          // someone waits on room
	full     chan struct{} // closed while someone waits on room (see waitedFor)
	taken    int64         // events taken so far
	stalled  bool          // the observer took nothing for n.stall with the buffer full
	ctx      context.Context
	cancel   context.CancelFunc
	lastWarn time.Time // of the last drop warning

	dropped atomic.Int64
	panics  atomic.Int64
}

// queuedEvent is an event waiting for the Observer, with the context it
// will be given: cancelled if Stop gives up before it is observed.
type queuedEvent struct {
	ctx context.Context
	e   Event
}

func newNotifier(obs Observer, limit int, logger *slog.Logger) *notifier {
	n := &notifier{obs: obs, limit: limit, stall: observerStall, logger: logger, idle: make(chan struct{}), room: make(chan struct{}), full: make(chan struct{})}
	close(n.idle)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	return n
}

// push queues e. With the buffer full it waits for room while the observer
// makes progress, and drops e once it has made none for n.stall.
func (n *notifier) push(e Event) {
	n.mu.Lock()
	for len(n.queued)-n.head >= n.limit {
		if n.stalled {
			n.drop()
			return
		}
		room, taken := n.room, n.taken
		if !n.waiting {
			n.waiting = true
			close(n.full)
		}
		n.mu.Unlock()
		t := time.NewTimer(n.stall)
		select {
		case <-room:
		case <-t.C:
		}
		t.Stop()
		n.mu.Lock()
		if n.taken == taken && len(n.queued)-n.head >= n.limit {
			n.stalled = true
		}
	}
	if n.head > 0 && len(n.queued) == cap(n.queued) {
		// Reuse the room of the events taken.
		k := copy(n.queued, n.queued[n.head:])
		clear(n.queued[k:])
		n.queued, n.head = n.queued[:k], 0
	}
	n.queued = append(n.queued, queuedEvent{ctx: n.ctx, e: e})
	if !n.running {
		n.running = true
		n.idle = make(chan struct{})
		go n.run(n.idle)
	}
	n.mu.Unlock()
}

// waitedFor returns a channel closed while a worker waits for the observer
// to take an event: an admin call that waits for a worker stops waiting
// then, as the observer may be the one making it (see worker.reloadNow).
func (n *notifier) waitedFor() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.full
}

// drop counts a dropped event and warns at most once a minute. Called with
// n.mu held; it releases it.
func (n *notifier) drop() {
	total := n.dropped.Add(1)
	warn := time.Since(n.lastWarn) >= time.Minute
	if warn {
		n.lastWarn = time.Now()
	}
	n.mu.Unlock()
	if warn {
		n.logger.Warn("apqueue: the Observer is blocked; events are dropped", slog.Int("buffer", n.limit), slog.Int64("dropped_total", total))
	}
}

// run hands the queued events over in order until none is left.
func (n *notifier) run(idle chan struct{}) {
	defer close(idle)
	for {
		n.mu.Lock()
		if n.head == len(n.queued) {
			n.queued, n.head = n.queued[:0], 0
			n.running = false
			n.mu.Unlock()
			return
		}
		q := n.queued[n.head]
		n.queued[n.head] = queuedEvent{}
		n.head++
		n.taken++
		n.stalled = false
		if n.waiting {
			n.waiting = false
			close(n.room)
			n.room = make(chan struct{})
			n.full = make(chan struct{})
		}
		n.mu.Unlock()
		n.call(q.ctx, q.e)
	}
}

// call hands one event over, recovering from a panic.
func (n *notifier) call(ctx context.Context, e Event) {
	defer func() {
		if r := recover(); r != nil {
			total := n.panics.Add(1)
			n.logger.Error("apqueue: the Observer panicked; the event is skipped",
				slog.Any("panic", r), slog.String("event", e.Kind.String()), slog.String("domain", e.Domain),
				slog.Int64("activity_id", e.ActivityID), slog.Int64("panics_total", total))
		}
	}()
	n.obs.Observe(ctx, e)
}

// flush waits until every event pushed so far was handed over, or until
// ctx ends: then the observer's context is cancelled (a fresh one serves
// the events that come later) and flush returns without waiting more.
func (n *notifier) flush(ctx context.Context) {
	n.mu.Lock()
	idle := n.idle
	n.mu.Unlock()
	select {
	case <-idle:
		return
	case <-ctx.Done():
	}
	n.mu.Lock()
	n.cancel()
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.mu.Unlock()
	n.logger.Warn("apqueue: the Observer did not take its events before the stop deadline; its context is cancelled", slog.Int64("dropped_total", n.dropped.Load()))
}

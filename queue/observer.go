package queue

import (
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
	// the enqueuing process, once per activity and domain.
	EventSuspendedDropped
)

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
// OpenTelemetry) without apqueue depending on them. Observe is called
// synchronously from the domain's worker: it must be fast and must not
// block.
type Observer interface {
	Observe(Event)
}

// ObserverFunc adapts a function to the Observer interface.
type ObserverFunc func(Event)

// Observe calls f(e).
func (f ObserverFunc) Observe(e Event) { f(e) }

// observe reports e if an Observer is configured.
func (q *Queue) observe(e Event) {
	if q.cfg.Observer != nil {
		q.cfg.Observer.Observe(e)
	}
}

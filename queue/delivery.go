package queue

import (
	"time"

	"github.com/apqueue/apqueue/store"
)

// delivery is one activity on its way to one inbox of a worker's domain.
type delivery struct {
	entry  *entry
	inbox  string
	shared bool // inbox is the domain's shared inbox

	bytes int // the entry's footprint, on the first delivery of an entry

	attempts     int
	firstFailure time.Time
	// successesBefore is the worker's success count when the attempt that
	// first failed here was sent: a delivery is given up on only once the
	// domain accepted others since (see worker.retry).
	successesBefore int64
	nextAttempt     time.Time
	lastError       string // the reason of the last failed attempt
	inFlight        bool
	settled         bool
	sentAt          time.Time // real time the current attempt started
	sentClock       time.Time // the same on the queue's clock, for the in-flight limit
	// sentSeq numbers the current attempt for the in-flight limit, and
	// sentInflight is how many requests to the domain were in flight when
	// it was sent, itself included.
	sentSeq      uint64
	sentInflight int
}

func (d *delivery) key() string { return d.entry.act.OrderingKey }

// deadLetter records d as failed for good.
func (d *delivery) deadLetter(dom string, status int, reason string) store.DeadLetter {
	a := d.entry.act
	return store.DeadLetter{
		ActivityID:  a.ID,
		Domain:      dom,
		Inbox:       d.inbox,
		Actor:       a.Actor,
		OrderingKey: a.OrderingKey,
		Body:        a.Body,
		Status:      status,
		Reason:      reason,
		Attempts:    d.attempts,
	}
}

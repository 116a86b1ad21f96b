package main

import (
	"context"
	"sync/atomic"

	"github.com/apqueue/apqueue/sender"
)

// limitedSender bounds the requests in flight across all domains. The queue
// bounds them per domain only, so a burst to 20,000 domains (AllDomains)
// opens a connection to each at once; with the inboxes in the same process
// that is 40,000 descriptors, above a common open-file limit of 20,000, and
// the run would measure accept errors and timeouts instead of the queue.
// A real server has the same limit and would bound its connections too.
type limitedSender struct {
	next  sender.Sender
	slots chan struct{}
	// waits counts the sends that found every slot taken.
	waits atomic.Int64
}

func newLimitedSender(next sender.Sender, limit int) *limitedSender {
	return &limitedSender{next: next, slots: make(chan struct{}, limit)}
}

// Send waits for a slot, then sends with the wrapped sender. A context
// that ends first is a retry, as a send cut short by it would be.
func (l *limitedSender) Send(ctx context.Context, d *sender.Delivery) sender.Result {
	select {
	case l.slots <- struct{}{}:
	default:
		l.waits.Add(1)
		select {
		case l.slots <- struct{}{}:
		case <-ctx.Done():
			return sender.Result{Outcome: sender.Retry, Reason: "waiting for a connection slot: " + ctx.Err().Error()}
		}
	}
	defer func() { <-l.slots }()
	return l.next.Send(ctx, d)
}

// Package sendertest provides a scriptable Sender for tests of code that
// uses the queue, and of the queue itself.
package sendertest

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/apqueue/apqueue/sender"
)

// Call records one delivery attempt the Fake received.
type Call struct {
	Domain     string
	Inbox      string
	ActivityID int64
	Attempt    int
	Result     sender.Result
	Started    time.Time
	Finished   time.Time
}

// Fake is a Sender that answers with Handler (by default: 202 Accepted for
// every delivery) and records every attempt, including how many were in
// flight at once per domain. It is safe for concurrent use.
type Fake struct {
	// Handler decides each result. It may block, and should return when ctx
	// ends. Set it before the first Send.
	Handler func(ctx context.Context, d *sender.Delivery) sender.Result

	mu          sync.Mutex
	calls       []Call
	inflight    map[string]int
	maxInflight map[string]int
}

// Send runs Handler and records the attempt.
func (f *Fake) Send(ctx context.Context, d *sender.Delivery) sender.Result {
	f.mu.Lock()
	if f.inflight == nil {
		f.inflight = make(map[string]int)
		f.maxInflight = make(map[string]int)
	}
	f.inflight[d.Domain]++
	f.maxInflight[d.Domain] = max(f.maxInflight[d.Domain], f.inflight[d.Domain])
	f.mu.Unlock()

	started := time.Now()
	res := sender.Success(http.StatusAccepted)
	if f.Handler != nil {
		res = f.Handler(ctx, d)
	}

	f.mu.Lock()
	f.inflight[d.Domain]--
	f.calls = append(f.calls, Call{
		Domain:     d.Domain,
		Inbox:      d.Inbox,
		ActivityID: d.Activity.ID,
		Attempt:    d.Attempt,
		Result:     res,
		Started:    started,
		Finished:   time.Now(),
	})
	f.mu.Unlock()
	return res
}

// Calls returns the finished attempts in the order they finished.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

// Delivered returns the IDs of the activities delivered to inbox, in the
// order the deliveries finished; repeats show re-sends.
func (f *Fake) Delivered(inbox string) []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []int64
	for _, c := range f.calls {
		if c.Inbox == inbox && c.Result.Outcome == sender.Delivered {
			ids = append(ids, c.ActivityID)
		}
	}
	return ids
}

// DeliveredCount returns how many attempts ended Delivered, over all inboxes.
func (f *Fake) DeliveredCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.Result.Outcome == sender.Delivered {
			n++
		}
	}
	return n
}

// MaxInFlight returns the most attempts that were in flight to domain at
// once.
func (f *Fake) MaxInFlight(domain string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxInflight[domain]
}

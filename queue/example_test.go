package queue_test

import (
	"context"
	"fmt"
	"time"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/store/memory"
)

func Example() {
	delivered := make(chan string, 1)
	// A real server passes an HTTP sender (package sender); this one prints.
	snd := sender.SenderFunc(func(ctx context.Context, d *sender.Delivery) sender.Result {
		delivered <- fmt.Sprintf("activity %d to %s (attempt %d)", d.Activity.ID, d.Inbox, d.Attempt)
		return sender.Success(202)
	})
	q, err := queue.New(memory.New(), snd, nil)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := q.Start(ctx); err != nil {
		panic(err)
	}
	defer q.Stop(ctx)

	_, err = q.Enqueue(ctx, queue.Activity{
		Body:    []byte(`{"id":"https://example.social/activities/1","type":"Create","actor":"https://example.social/users/alice","object":"https://example.social/notes/1"}`),
		Inboxes: []string{"https://remote.example/users/bob/inbox"},
	})
	if err != nil {
		panic(err)
	}
	select {
	case d := <-delivered:
		fmt.Println(d)
	case <-time.After(5 * time.Second):
		fmt.Println("not delivered")
	}
	// Output: activity 1 to https://remote.example/users/bob/inbox (attempt 1)
}

// An enqueue that may be retried (after a timeout, or by a job that runs
// again) carries an idempotency key: the retry returns the first
// activity's ID and nothing is sent twice.
func ExampleActivity_idempotencyKey() {
	q, err := queue.New(memory.New(), sender.SenderFunc(func(ctx context.Context, d *sender.Delivery) sender.Result {
		return sender.Success(202)
	}), nil)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	a := queue.Activity{
		Body:           []byte(`{"id":"https://example.social/activities/1","type":"Create","actor":"https://example.social/users/alice","object":"https://example.social/notes/1"}`),
		Inboxes:        []string{"https://remote.example/users/bob/inbox"},
		IdempotencyKey: "https://example.social/activities/1",
	}
	first, err := q.Enqueue(ctx, a)
	if err != nil {
		panic(err)
	}
	retried, err := q.Enqueue(ctx, a)
	if err != nil {
		panic(err)
	}
	fmt.Println(first, retried)
	// Output: 1 1
}

// A server that defederates from a domain suspends it: nothing more is
// sent there, and what is enqueued for it meanwhile is reported to the
// Observer, from whichever process enqueues it.
func ExampleQueue_Suspend() {
	dropped := make(chan queue.Event, 3)
	q, err := queue.New(memory.New(), sender.SenderFunc(func(ctx context.Context, d *sender.Delivery) sender.Result {
		return sender.Success(202)
	}), &queue.Config{Observer: queue.ObserverFunc(func(ctx context.Context, e queue.Event) {
		if e.Kind == queue.EventSuspendedDropped {
			dropped <- e // called from the queue's own goroutine
		}
	})})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	post := func(n int) {
		_, err := q.Enqueue(ctx, queue.Activity{
			Body:    fmt.Appendf(nil, `{"id":"https://example.social/activities/%d","type":"Create","actor":"https://example.social/users/alice","object":"https://example.social/notes/%d"}`, n, n),
			Inboxes: []string{"https://blocked.example/inbox"},
		})
		if err != nil {
			panic(err)
		}
	}
	post(1)
	if _, err := q.Suspend(ctx, "blocked.example"); err != nil {
		panic(err)
	}
	post(2)
	if err := q.Unsuspend(ctx, "blocked.example"); err != nil {
		panic(err)
	}
	post(3)
	select {
	case e := <-dropped:
		fmt.Printf("activity %d not delivered to %s\n", e.ActivityID, e.Domain)
	case <-time.After(5 * time.Second):
		fmt.Println("no event")
	}
	// Output: activity 2 not delivered to blocked.example
}

// Forget removes a domain and its state; a later activity for it
// registers it again, as a new domain.
func ExampleQueue_Forget() {
	st := memory.New()
	q, err := queue.New(st, sender.SenderFunc(func(ctx context.Context, d *sender.Delivery) sender.Result {
		return sender.Success(202)
	}), nil)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	post := func() int64 {
		id, err := q.Enqueue(ctx, queue.Activity{
			Body:    []byte(`{"id":"https://example.social/activities/1","type":"Delete","actor":"https://example.social/users/alice","object":"https://example.social/users/alice"}`),
			Inboxes: []string{"https://old.example/inbox"},
		})
		if err != nil {
			panic(err)
		}
		return id
	}
	known := func() {
		doms, err := st.Domains(ctx, []string{"old.example"})
		if err != nil {
			panic(err)
		}
		fmt.Println("known:", len(doms) == 1)
	}
	post()
	known()
	if err := q.Forget(ctx, "old.example"); err != nil {
		panic(err)
	}
	known()
	id := post()
	known()
	doms, _ := st.Domains(ctx, []string{"old.example"})
	fmt.Println("delivered from activity", doms[0].Cursor+1, "on; new activity", id)
	// Output:
	// known: true
	// known: false
	// known: true
	// delivered from activity 2 on; new activity 2
}

// Limits of requests in flight for a server that delivers to a few big
// servers and some fragile ones: each domain's limit adapts up to its
// maximum, and all domains together never have more than MaxInFlight.
func ExampleConfig_concurrencyLimits() {
	fragile := map[string]bool{"tiny.example": true}
	cfg := &queue.Config{
		// Up to 128 requests at once to the big servers, one at a time to
		// the fragile ones, 64 (the default) elsewhere.
		DomainLimitFunc: func(domain string) int {
			switch {
			case fragile[domain]:
				return 1
			case domain == "mastodon.social":
				return 128
			}
			return 0
		},
		// At most 500 requests in flight in all.
		MaxInFlight: 500,
	}
	snd := sender.SenderFunc(func(ctx context.Context, d *sender.Delivery) sender.Result {
		return sender.Success(202)
	})
	q, err := queue.New(memory.New(), snd, cfg)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := q.Start(ctx); err != nil {
		panic(err)
	}
	defer q.Stop(ctx)
	if _, err := q.Enqueue(ctx, queue.Activity{
		Body:    []byte(`{"id":"https://example.social/activities/1","type":"Create","actor":"https://example.social/users/alice","object":"https://example.social/notes/1"}`),
		Inboxes: []string{"https://tiny.example/inbox", "https://mastodon.social/inbox", "https://other.example/inbox"},
	}); err != nil {
		panic(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		st, err := q.Stats(ctx)
		if err != nil {
			panic(err)
		}
		if st.Delivered == 3 {
			for _, d := range st.Domains {
				fmt.Printf("%s: limit %d of %d\n", d.Domain, d.InFlightLimit, d.InFlightMax)
			}
			return
		}
		time.Sleep(time.Millisecond)
	}
	fmt.Println("not delivered")
	// Output:
	// mastodon.social: limit 4 of 128
	// other.example: limit 4 of 64
	// tiny.example: limit 1 of 1
}

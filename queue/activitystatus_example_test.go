package queue_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/store/memory"
)

// goneSender accepts everything except at gone.example, where the
// recipient's inbox answers 410 Gone (the HTTP sender classifies a 404 or
// 410 from a personal inbox the same way).
var goneSender = sender.SenderFunc(func(ctx context.Context, d *sender.Delivery) sender.Result {
	if d.Domain == "gone.example" {
		return sender.Result{Outcome: sender.InboxGone, Status: 410, Reason: "410 Gone"}
	}
	return sender.Success(202)
})

const exampleBody = `{"id":"https://example.social/activities/1","type":"Create","actor":"https://example.social/users/alice","object":"https://example.social/notes/1"}`

func ExampleQueue_ActivityStatus() {
	q, err := queue.New(memory.New(), goneSender, &queue.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := q.Start(ctx); err != nil {
		panic(err)
	}
	defer q.Stop(ctx)
	id, err := q.Enqueue(ctx, queue.Activity{
		Body:    []byte(exampleBody),
		Inboxes: []string{"https://remote.example/users/bob/inbox", "https://gone.example/users/carol/inbox"},
	})
	if err != nil {
		panic(err)
	}

	// Wait until nothing is pending (a server would show the status as it is).
	var st queue.ActivityStatus
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if st, err = q.ActivityStatus(ctx, id); err != nil {
			panic(err)
		}
		if st.Count(queue.DeliveryPending) == 0 {
			break
		}
	}
	for _, d := range st.Domains {
		if d.Reason != "" {
			fmt.Printf("%s: %s (%s)\n", d.Domain, d.State, d.Reason)
		} else {
			fmt.Printf("%s: %s\n", d.Domain, d.State)
		}
	}
	// Output:
	// gone.example: dead_lettered (inbox gone: 410 Gone)
	// remote.example: delivered
}

func ExampleEventInboxGone() {
	gone := make(chan queue.Event, 1)
	cfg := &queue.Config{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		// The Observer is called from the queue's own goroutine: it may
		// take its time (a database update) without delaying deliveries.
		Observer: queue.ObserverFunc(func(ctx context.Context, e queue.Event) {
			if e.Kind == queue.EventInboxGone {
				gone <- e // a server would drop the follower with this inbox
			}
		}),
	}
	q, err := queue.New(memory.New(), goneSender, cfg)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := q.Start(ctx); err != nil {
		panic(err)
	}
	defer q.Stop(ctx)
	if _, err := q.Enqueue(ctx, queue.Activity{Body: []byte(exampleBody), Inboxes: []string{"https://gone.example/users/carol/inbox"}}); err != nil {
		panic(err)
	}
	select {
	case e := <-gone:
		fmt.Printf("gone: %s on %s (activity %d, HTTP %d)\n", e.Inbox, e.Domain, e.ActivityID, e.HTTPStatus)
	case <-time.After(5 * time.Second):
		fmt.Println("no event")
	}
	// Output: gone: https://gone.example/users/carol/inbox on gone.example (activity 1, HTTP 410)
}

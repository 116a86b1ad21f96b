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

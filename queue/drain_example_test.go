package queue_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/store/memory"
)

// A batch job, or a test, enqueues and then waits until everything is
// delivered or dead-lettered. The inbox listens on plain http on loopback:
// Config.HTTP says so in one place, with unsigned requests, for the
// default sender.
func ExampleQueue_Drain() {
	var received atomic.Int64
	inbox := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer inbox.Close()

	q, err := queue.New(memory.New(), nil, &queue.Config{
		HTTP: &sender.HTTPConfig{AllowLoopback: true, AllowHTTP: true, Unsigned: true},
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := q.Start(ctx); err != nil {
		panic(err)
	}
	defer q.Stop(ctx)

	for i := range 3 {
		_, err := q.Enqueue(ctx, queue.Activity{
			Body:    fmt.Appendf(nil, `{"id":"https://example.social/activities/%d","type":"Create","actor":"https://example.social/users/alice","object":"https://example.social/notes/%d"}`, i, i),
			Inboxes: []string{inbox.URL + "/users/bob/inbox"},
		})
		if err != nil {
			panic(err)
		}
	}
	if err := q.Drain(ctx); err != nil {
		panic(err)
	}
	fmt.Println("received:", received.Load())
	// Output: received: 3
}

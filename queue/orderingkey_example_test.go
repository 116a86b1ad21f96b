package queue_test

import (
	"context"
	"fmt"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/store/memory"
)

// An Undo that embeds the Follow it undoes gets the Follow's ordering key,
// so it never overtakes the Follow; an Undo that names what it undoes only
// by id is given the key by the caller.
func ExampleActivity_orderingKey() {
	st := memory.New()
	snd := sender.SenderFunc(func(context.Context, *sender.Delivery) sender.Result { return sender.Success(202) })
	q, err := queue.New(st, snd, nil)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	inbox := []string{"https://remote.example/users/bob/inbox"}
	follow := `{"id":"https://example.social/follows/1","type":"Follow","actor":"https://example.social/users/alice","object":"https://remote.example/users/bob"}`
	_, err = q.EnqueueMany(ctx, []queue.Activity{
		{Body: []byte(follow), Inboxes: inbox},
		{Body: []byte(`{"id":"https://example.social/follows/1/undo","type":"Undo","actor":"https://example.social/users/alice","object":` + follow + `}`), Inboxes: inbox},
		{Body: []byte(`{"id":"https://example.social/likes/1","type":"Like","actor":"https://example.social/users/alice","object":"https://remote.example/notes/9"}`), Inboxes: inbox},
		{
			Body:        []byte(`{"id":"https://example.social/likes/1/undo","type":"Undo","actor":"https://example.social/users/alice","object":"https://example.social/likes/1"}`),
			Inboxes:     inbox,
			OrderingKey: "https://remote.example/notes/9", // the liked note: the body does not say
		},
	})
	if err != nil {
		panic(err)
	}
	acts, err := st.Activities(ctx, 0, 10)
	if err != nil {
		panic(err)
	}
	for _, a := range acts {
		fmt.Println(a.OrderingKey)
	}
	// Output:
	// relationship https://example.social/users/alice https://remote.example/users/bob
	// relationship https://example.social/users/alice https://remote.example/users/bob
	// https://remote.example/notes/9
	// https://remote.example/notes/9
}

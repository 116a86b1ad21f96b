package queue

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/apqueue/apqueue/sender/sendertest"
)

// BenchmarkPrepare measures the checks and parsing an enqueue does before
// the store sees the activity: a 1 KiB Create of a note to one inbox, as a
// web request that creates a post enqueues it.
func BenchmarkPrepare(b *testing.B) {
	q, err := New(newMemory(), &sendertest.Fake{}, testConfig())
	if err != nil {
		b.Fatal(err)
	}
	head := fmt.Sprintf(`{"@context":"https://www.w3.org/ns/activitystreams","id":"https://local.example/activities/1","type":"Create","actor":%q,"to":["https://local.example/users/alice/followers"],"object":{"id":"https://local.example/notes/1","type":"Note","attributedTo":%q,"content":"`, testActor, testActor)
	tail := `"}}`
	body := []byte(head + strings.Repeat("x", 1024-len(head)-len(tail)) + tail)
	a := Activity{Body: body, Inboxes: []string{"https://remote.example/inbox"}}
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.prepare(ctx, a); err != nil {
			b.Fatal(err)
		}
	}
}

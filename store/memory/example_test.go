package memory_test

import (
	"context"
	"fmt"
	"time"

	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/memory"
)

// Example appends an activity, leases the domain it names, and saves the
// domain's progress, as the queue does.
func Example() {
	ctx := context.Background()
	s := memory.New()

	appended, err := s.Append(ctx, []store.NewActivity{{
		Actor:   "https://local.example/users/alice",
		Body:    []byte(`{"type":"Create","actor":"https://local.example/users/alice"}`),
		Inboxes: []string{"https://remote.example/inbox"},
		Domains: []string{"remote.example"},
	}})
	if err != nil {
		panic(err)
	}
	ids := store.AppendedIDs(appended)
	fmt.Println("appended", ids)

	leased, err := s.AcquireLeases(ctx, "worker-1", time.Minute, 10)
	if err != nil {
		panic(err)
	}
	st := leased[0]
	fmt.Println("leased", st.Domain, "at cursor", st.Cursor)

	// ... deliver activity 1 to remote.example, then save the progress.
	st.Cursor = ids[0]
	if err := s.Checkpoint(ctx, []store.DomainState{st}, nil); err != nil {
		panic(err)
	}
	res, err := s.Prune(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("pruned", res.Deleted)
	// Output:
	// appended [1]
	// leased remote.example at cursor 0
	// pruned 1
}

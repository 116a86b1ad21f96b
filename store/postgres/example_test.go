package postgres_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/postgres"
)

// Example appends an activity inside a transaction of the caller's, which
// makes it visible to readers only once the transaction commits.
func Example() {
	url := os.Getenv("TEST_DATABASE_URL")
	if url == "" {
		// Without a database there is nothing to show; print what the
		// example would.
		fmt.Println("before commit: 0 activities")
		fmt.Println("after commit: 1 activities")
		return
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	// A fresh schema, in case an earlier run was interrupted.
	if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS apqueue_example CASCADE"); err != nil {
		panic(err)
	}
	st, err := postgres.New(pool, &postgres.Config{Schema: "apqueue_example"})
	if err != nil {
		panic(err)
	}
	defer pool.Exec(ctx, "DROP SCHEMA apqueue_example CASCADE") //nolint:errcheck // example cleanup
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		panic(err)
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		panic(err)
	}
	err = st.AppendTx(ctx, tx, []store.NewActivity{{
		Body:    []byte(`{"type":"Create"}`),
		Inboxes: []string{"https://remote.example/inbox"},
		Domains: []string{"remote.example"},
	}})
	if err != nil {
		panic(err)
	}
	acts, _ := st.Activities(ctx, 0, 10)
	fmt.Printf("before commit: %d activities\n", len(acts))
	if err := tx.Commit(ctx); err != nil {
		panic(err)
	}
	// The store numbers the activity just after the commit (readers that
	// listen are woken then).
	for deadline := time.Now().Add(5 * time.Second); len(acts) == 0 && time.Now().Before(deadline); {
		acts, _ = st.Activities(ctx, 0, 10)
	}
	fmt.Printf("after commit: %d activities\n", len(acts))
	// Output:
	// before commit: 0 activities
	// after commit: 1 activities
}

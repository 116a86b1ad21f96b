package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite"

	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/sqlite"
)

// Example opens a database file with the settings the store needs, and
// appends an activity inside a transaction of the caller's, which makes it
// visible to readers only once the transaction commits.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "apqueue-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	// modernc.org/sqlite's DSN: wait up to 5 s for the write lock, sync the
	// WAL at every commit, begin transactions IMMEDIATE.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+
		"?_pragma=busy_timeout(5000)&_pragma=synchronous(full)&_txlock=immediate")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	st, err := sqlite.New(db, nil)
	if err != nil {
		panic(err)
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		panic(err)
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	_, err = st.AppendTx(ctx, tx, []store.NewActivity{{
		Body:    []byte(`{"type":"Create"}`),
		Inboxes: []string{"https://remote.example/inbox"},
		Domains: []string{"remote.example"},
	}})
	if err != nil {
		panic(err)
	}
	acts, _ := st.Activities(ctx, 0, 10)
	fmt.Printf("before commit: %d activities\n", len(acts))
	if err := tx.Commit(); err != nil {
		panic(err)
	}
	acts, _ = st.Activities(ctx, 0, 10)
	fmt.Printf("after commit: %d activities\n", len(acts))
	// Output:
	// before commit: 0 activities
	// after commit: 1 activities
}

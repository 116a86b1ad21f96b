package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // the SQLite driver of -store sqlite

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/sqlite"
)

// sqliteDSN is the modernc.org/sqlite DSN of the database file path with
// the settings the store needs (see the store/sqlite package
// documentation): a busy timeout, synchronous FULL, IMMEDIATE transactions.
func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=synchronous(full)&_txlock=immediate"
}

// openSQLite prepares the run's SQLite file: -db when given (kept at the
// end), otherwise a new file in a temporary directory (removed at the end),
// migrated.
func (b *backend) openSQLite(ctx context.Context, path string) error {
	if path == "" {
		dir, err := os.MkdirTemp("", "apqueue-loadtest-")
		if err != nil {
			return err
		}
		b.sqliteDir, path = dir, filepath.Join(dir, "loadtest.db")
	}
	b.sqlitePath = path
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := sqlite.New(db, &sqlite.Config{Logger: b.logger})
	if err != nil {
		return err
	}
	if _, err := st.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate %s: %w", path, err)
	}
	return nil
}

// newSQLiteStore returns a store on a *sql.DB of its own, as a process of
// its own would have.
func (b *backend) newSQLiteStore() (store.Store, error) {
	db, err := sql.Open("sqlite", sqliteDSN(b.sqlitePath))
	if err != nil {
		return nil, err
	}
	st, err := sqlite.New(db, &sqlite.Config{Logger: b.logger})
	if err != nil {
		db.Close()
		return nil, err
	}
	b.sqliteDBs = append(b.sqliteDBs, db)
	b.sqliteStores = append(b.sqliteStores, st)
	return st, nil
}

// closeSQLite closes the databases and removes the temporary file.
func (b *backend) closeSQLite() {
	for _, st := range b.sqliteStores {
		st.Close()
	}
	for _, db := range b.sqliteDBs {
		_ = db.Close()
	}
	if b.sqliteDir != "" {
		_ = os.RemoveAll(b.sqliteDir)
	}
}

// enqueueTx enqueues acts with q in one transaction of the caller's (on the
// last store newStore returned), as an application that writes its own
// rows with them would.
func (b *backend) enqueueTx(ctx context.Context, q *queue.Queue, acts []queue.Activity) error {
	switch {
	case len(b.sqliteStores) > 0:
		db, st := b.sqliteDBs[len(b.sqliteDBs)-1], b.sqliteStores[len(b.sqliteStores)-1]
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := q.EnqueueManyTx(ctx, st.Tx(tx), acts); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	case len(b.stores) > 0:
		return b.enqueuePostgresTx(ctx, q, acts)
	}
	return fmt.Errorf("-tx needs -store sqlite or postgres")
}

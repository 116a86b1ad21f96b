package sqlite_test

import (
	"time"

	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/queuetest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/sqlite"
	"github.com/apqueue/apqueue/store/storetest"
)

// TestConformance runs the store conformance suite with Listen's counter
// reads on and off, and on a pool of one connection, as many SQLite
// applications configure it: the store must never wait for a second
// connection while it holds one.
func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name     string
		interval time.Duration
		conns    int
	}{{"listen", 0, 0}, {"poll_only", -1, 0}, {"one_connection", 0, 1}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			storetest.Run(t, func(t *testing.T) store.Store {
				db := openDB(t, dsn(tempPath(t), ""))
				db.SetMaxOpenConns(c.conns)
				return storeOn(t, db, &sqlite.Config{ListenInterval: c.interval, Logger: queuetest.QuietLogger()})
			})
		})
	}
}

// TestConformanceTx runs the conformance cases of transactional appends.
func TestConformanceTx(t *testing.T) {
	storetest.RunTx(t, func(t *testing.T) (store.Store, storetest.TxFunc) {
		db := openDB(t, dsn(tempPath(t), ""))
		s := storeOn(t, db, &sqlite.Config{Logger: queuetest.QuietLogger()})
		return s, func(t *testing.T) (store.Tx, func() error, func() error) {
			tx, err := db.BeginTx(t.Context(), nil)
			require.NoError(t, err)
			return s.Tx(tx), tx.Commit, tx.Rollback
		}
	})
}

package postgres_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/postgres"
)

// The commit watcher vacuums the staging table once the transactions it saw
// end (committed and numbered, or rolled back: both leave dead rows) staged
// enough rows, and not again before its interval has passed. PostgreSQL's
// own statistics count the vacuums.
func TestCommitWatcherVacuumsTheStagingTable(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, nil)
	ctx := t.Context()
	postgres.SetStagingVacuum(s, 20, time.Hour)
	stage := func(n int, commit bool) {
		t.Helper()
		acts := make([]store.NewActivity, n)
		for i := range acts {
			acts[i] = newActivity("remote.example")
		}
		tx, err := db.Pool.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, s.AppendTx(ctx, tx, acts))
		if commit {
			require.NoError(t, tx.Commit(ctx))
		} else {
			require.NoError(t, tx.Rollback(ctx))
		}
		require.Eventually(t, func() bool { return postgres.WatchedTransactions(s) == 0 },
			10*time.Second, time.Millisecond, "the watcher sees the transaction end")
	}
	vacuums := func() int64 {
		var n int64
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT vacuum_count FROM pg_stat_user_tables
			WHERE schemaname = $1 AND relname = 'staged_activities'`, db.Schema).Scan(&n))
		return n
	}

	stage(10, true)
	stage(9, false)
	require.Zero(t, postgres.StagingVacuums(s), "19 rows ended: no vacuum yet")
	require.Zero(t, vacuums())

	stage(1, false)
	require.Eventually(t, func() bool { return postgres.StagingVacuums(s) == 1 }, 10*time.Second, time.Millisecond,
		"20 rows ended: the watcher vacuums")
	require.Eventually(t, func() bool { return vacuums() == 1 }, 10*time.Second, 10*time.Millisecond,
		"PostgreSQL counts the vacuum of the staging table")

	stage(50, true)
	require.Equal(t, int64(1), postgres.StagingVacuums(s), "no second vacuum within the interval")
	require.Equal(t, int64(1), vacuums())
	head, err := s.Head(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(60), head, "the committed activities are numbered")
}

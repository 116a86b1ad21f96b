package postgres_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/postgres"
)

// stageAndSettle stages n activities through s in one transaction of
// pool, commits or rolls it back, and waits until s's commit watcher has
// seen it end, vacuumed what it owed and stopped.
func stageAndSettle(t *testing.T, s *postgres.Store, pool *pgxpool.Pool, n int, commit bool) {
	t.Helper()
	ctx := t.Context()
	acts := make([]store.NewActivity, n)
	for i := range acts {
		acts[i] = newActivity("remote.example")
	}
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, s.AppendTx(ctx, tx, acts))
	if commit {
		require.NoError(t, tx.Commit(ctx))
	} else {
		require.NoError(t, tx.Rollback(ctx))
	}
	require.Eventually(t, func() bool { return !postgres.WatcherRunning(s) }, 10*time.Second, time.Millisecond,
		"the watcher sees the transaction end and stops")
}

// The commit watcher vacuums the staging table once the transactions it saw
// end (committed and numbered, or rolled back: both leave dead rows) staged
// enough rows; a vacuum owed within the interval of the last waits for the
// interval to pass, the watcher running until then. PostgreSQL's own
// statistics count the vacuums.
func TestCommitWatcherVacuumsTheStagingTable(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, nil)
	ctx := t.Context()
	const interval = 500 * time.Millisecond
	postgres.SetStagingVacuum(s, 20, interval)
	vacuums := func() int64 {
		var n int64
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT vacuum_count FROM pg_stat_user_tables
			WHERE schemaname = $1 AND relname = 'staged_activities'`, db.Schema).Scan(&n))
		return n
	}

	stageAndSettle(t, s, db.Pool, 10, true)
	stageAndSettle(t, s, db.Pool, 9, false)
	require.Zero(t, postgres.StagingVacuums(s), "19 rows ended: no vacuum yet")
	require.Zero(t, vacuums())

	start := time.Now()
	stageAndSettle(t, s, db.Pool, 1, false)
	require.Equal(t, int64(1), postgres.StagingVacuums(s), "20 rows ended: the watcher vacuums")
	require.Eventually(t, func() bool { return vacuums() == 1 }, 10*time.Second, 10*time.Millisecond,
		"PostgreSQL counts the vacuum of the staging table")

	stageAndSettle(t, s, db.Pool, 25, true)
	require.Equal(t, int64(2), postgres.StagingVacuums(s), "the rows of the second burst are vacuumed too")
	require.GreaterOrEqual(t, time.Since(start), interval, "the second vacuum waited for the interval")
	require.Eventually(t, func() bool { return vacuums() == 2 }, 10*time.Second, 10*time.Millisecond)
	head, err := s.Head(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(35), head, "the committed activities are numbered")
}

// A store whose role may not vacuum the staging table (it owns neither the
// table nor the database) asks once, says so in its log, and leaves the
// table to autovacuum rather than send a VACUUM that PostgreSQL skips with
// a warning in its own log.
func TestCommitWatcherLeavesATableItMayNotVacuum(t *testing.T) {
	t.Parallel()
	owner, db := newStore(t, 0, nil)
	ctx := t.Context()
	var may bool
	require.NoError(t, db.Pool.QueryRow(ctx, postgres.MayVacuumSQL(owner)).Scan(&may))
	require.True(t, may, "the tests' role owns the table")

	role := db.Schema + "_writer"
	if _, err := db.Pool.Exec(ctx, "CREATE ROLE "+role); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			t.Skipf("the test database's role may not create roles: %v", err)
		}
		require.NoError(t, err)
	}
	t.Cleanup(func() {
		for _, drop := range []string{"DROP OWNED BY " + role, "DROP ROLE " + role} {
			if _, err := db.Pool.Exec(context.Background(), drop); err != nil {
				t.Errorf("%s: %v", drop, err)
			}
		}
	})
	schema := pgx.Identifier{db.Schema}.Sanitize()
	for _, grant := range []string{
		"GRANT USAGE ON SCHEMA " + schema + " TO " + role,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA " + schema + " TO " + role,
		"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA " + schema + " TO " + role,
	} {
		_, err := db.Pool.Exec(ctx, grant)
		require.NoError(t, err)
	}

	cfg, err := pgxpool.ParseConfig(db.ConnString)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["role"] = role
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	var logs syncBuffer
	s, err := postgres.New(pool, &postgres.Config{Schema: db.Schema, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	require.NoError(t, pool.QueryRow(ctx, postgres.MayVacuumSQL(s)).Scan(&may))
	require.False(t, may, "a role that owns nothing may not vacuum")

	postgres.SetStagingVacuum(s, 1, 0)
	stageAndSettle(t, s, pool, 5, true)
	stageAndSettle(t, s, pool, 5, true)
	require.Zero(t, postgres.StagingVacuums(s))
	require.Equal(t, 1, strings.Count(logs.String(), "may not vacuum the staging table"), logs.String())
	head, err := s.Head(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(10), head, "the role enqueues and numbers all the same")
}

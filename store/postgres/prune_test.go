package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/postgres"
)

// A dead domain revived while Prune runs must not be left below the prune
// point: its backlog would be deleted without a report.
func TestPruneWaitsForARevivalInProgress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Prune waits for the revival's commit: give it time to.
	s, db := newStore(t, 0, &postgres.Config{LockTimeout: time.Minute})
	require.NoError(t, s.RegisterDomains(ctx, []store.DomainRegistration{{Domain: "live.example"}, {Domain: "dead.example"}}))
	batch := make([]store.NewActivity, 10)
	for i := range batch {
		batch[i] = store.NewActivity{Actor: "https://local.example/u", OrderingKey: "k", Body: []byte(`{}`), AllDomains: true}
	}
	_, err := s.Append(ctx, batch)
	require.NoError(t, err)
	_, err = s.ChangeDomain(ctx, "live.example", store.DomainChange{SkipTo: 10})
	require.NoError(t, err)
	_, err = s.ChangeDomain(ctx, "dead.example", store.DomainChange{Status: store.StatusDead})
	require.NoError(t, err)

	// A revival (an admin's MarkAlive, or an owner's checkpoint after a
	// successful probe), not committed yet.
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "UPDATE "+pgx.Identifier{db.Schema}.Sanitize()+".domains SET status = 'active', revision = revision + 1 WHERE domain = 'dead.example'")
	require.NoError(t, err)

	type result struct {
		res store.PruneResult
		err error
	}
	done := make(chan result, 1)
	go func() { r, err := s.Prune(ctx); done <- result{r, err} }()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE %domains%'`).Scan(&n))
		return n > 0
	}, 5*time.Second, 10*time.Millisecond, "prune did not wait for the open revival")
	require.NoError(t, tx.Commit(ctx))
	r := <-done
	require.NoError(t, r.err)

	ds, err := s.Domains(ctx, []string{"dead.example"})
	require.NoError(t, err)
	require.Equal(t, store.StatusActive, ds[0].Status)
	require.LessOrEqual(t, r.res.Below, ds[0].Cursor, "a live domain was left below the prune point")
	acts, err := s.Activities(ctx, ds[0].Cursor, 100)
	require.NoError(t, err)
	require.Len(t, acts, 10, "the revived domain's backlog is kept")
}

// TestPruneGivesUpOnLocks leaves a session idle in a transaction that wrote
// to the domains table: Prune gives up after Config.LockTimeout with
// ErrLockTimeout, changing nothing, and enqueues, plain and transactional,
// go on meanwhile and after.
func TestPruneGivesUpOnLocks(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, &postgres.Config{LockTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	first := appendOne(t, s, "a.example")
	_, err := s.ChangeDomain(ctx, "a.example", store.DomainChange{SkipTo: first})
	require.NoError(t, err)

	idle, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer idle.Rollback(context.Background()) //nolint:errcheck // ends the test's transaction on failure
	_, err = idle.Exec(ctx, "UPDATE "+pgx.Identifier{db.Schema}.Sanitize()+".domains SET last_error = 'x' WHERE domain = 'a.example'")
	require.NoError(t, err)

	_, err = s.Prune(ctx)
	require.ErrorIs(t, err, postgres.ErrLockTimeout)
	require.Equal(t, []int64{first}, readAll(t, s, 0), "a skipped prune deleted something")
	appendOne(t, s, "b.example")
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		return s.AppendTx(ctx, tx, []store.NewActivity{newActivity("c.example")})
	}))
	readN(t, s, 0, 3)

	require.NoError(t, idle.Rollback(ctx))
	res, err := s.Prune(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Deleted)
}

// TestPruneDeletesInBatches prunes more activities than one batch holds:
// every one goes, in statements of bounded size.
func TestPruneDeletesInBatches(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, 0, nil)
	ctx := t.Context()
	const total = 2*postgres.PruneBatch + 10
	batch := make([]store.NewActivity, 1000)
	for i := range batch {
		batch[i] = newActivity()
	}
	for n := 0; n < total; n += len(batch) {
		_, err := s.Append(ctx, batch[:min(len(batch), total-n)])
		require.NoError(t, err)
	}
	before := s.Stats().Statements
	res, err := s.Prune(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(total), res.Deleted)
	// The floor transaction (BEGIN, lock_timeout, LOCK, floor, COMMIT),
	// then three deleting transactions of four statements each, and one
	// for the expired idempotency keys.
	require.Equal(t, int64(5+3*4+4), s.Stats().Statements-before)
	require.Empty(t, readAll(t, s, 0))
}

// TestPruneDeletesExpiredKeysInBatches prunes more expired idempotency
// keys than one batch holds, in statements of bounded size, and gives up
// on a key whose row another session holds after Config.LockTimeout, as
// every maintenance step does.
func TestPruneDeletesExpiredKeysInBatches(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, &postgres.Config{LockTimeout: 100 * time.Millisecond})
	ctx := t.Context()
	keys := pgx.Identifier{db.Schema, "idempotency_keys"}.Sanitize()
	const expired = 2*postgres.PruneBatch + 10
	_, err := db.Pool.Exec(ctx, `INSERT INTO `+keys+` (key, activity_id, expires_at)
		SELECT 'expired-' || g, g, now() - interval '1 minute' FROM generate_series(1, $1::int) AS g`, expired)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `INSERT INTO `+keys+` (key, activity_id, expires_at) VALUES ('live', 0, now() + interval '1 hour')`)
	require.NoError(t, err)

	before := s.Stats().Statements
	res, err := s.Prune(ctx)
	require.NoError(t, err)
	require.EqualValues(t, expired, res.ExpiredKeys)
	// The floor transaction (five statements), one deleting transaction for
	// the empty log, then three for the keys, four statements each.
	require.Equal(t, int64(5+4+3*4), s.Stats().Statements-before)
	var left []string
	rows, err := db.Pool.Query(ctx, `SELECT key FROM `+keys)
	require.NoError(t, err)
	left, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"live"}, left)

	// A key row another session holds: Prune gives up on it in time.
	_, err = db.Pool.Exec(ctx, `UPDATE `+keys+` SET expires_at = now() - interval '1 minute'`)
	require.NoError(t, err)
	holder, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer holder.Rollback(context.Background()) //nolint:errcheck // ends the test's transaction on failure
	_, err = holder.Exec(ctx, `SELECT 1 FROM `+keys+` WHERE key = 'live' FOR UPDATE`)
	require.NoError(t, err)
	_, err = s.Prune(ctx)
	require.ErrorIs(t, err, postgres.ErrLockTimeout)
	require.NoError(t, holder.Rollback(ctx))
	res, err = s.Prune(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, res.ExpiredKeys)
}

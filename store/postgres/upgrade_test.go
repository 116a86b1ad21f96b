package postgres_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/postgres"
)

// v3 is a process of the previous release (schema version 3), reduced to
// the statements with which it wrote and read the log: appends through the
// counter, and transactional appends that reserve IDs in pending_appends
// and insert them later in the caller's transaction. Its activities carry
// their name in ordering_key.
type v3 struct {
	pool *pgxpool.Pool
	r    *strings.Replacer
}

func newV3(pool *pgxpool.Pool, schema string) v3 {
	s := pgx.Identifier{schema}.Sanitize()
	head := strings.ReplaceAll(`(SELECT least(c.last_id, coalesce((
		SELECT min(p.first_id) - 1 FROM {s}.pending_appends p
		WHERE NOT pg_visible_in_snapshot(p.xid, pg_current_snapshot())), c.last_id))
	FROM {s}.id_counter c)`, "{s}", s)
	return v3{pool: pool, r: strings.NewReplacer("{safe_head}", head, "{s}", s)}
}

const v3Columns = `(id, actor, ordering_key, body, inboxes, domains, audiences, all_domains)`

func (v v3) append(t *testing.T, name, domain string) int64 {
	t.Helper()
	var id int64
	require.NoError(t, v.pool.QueryRow(t.Context(), v.r.Replace(`WITH c AS (
	UPDATE {s}.id_counter SET last_id = last_id + 1 RETURNING last_id AS id
), h AS (
	SELECT {safe_head} AS head
), a AS (
	INSERT INTO {s}.activities `+v3Columns+`
	SELECT c.id, '', $1, '\x7b7d', ARRAY['https://' || $2 || '/inbox'], ARRAY[$2], '{}', false FROM c
), d AS (
	INSERT INTO {s}.domains (domain, cursor) SELECT $2, h.head FROM h ON CONFLICT (domain) DO NOTHING
)
SELECT c.id FROM c`), name, domain).Scan(&id))
	return id
}

// appendTx reserves an ID for tx on the pool, as the previous release did
// on a connection of its own, and inserts the activity in tx.
func (v v3) appendTx(t *testing.T, tx pgx.Tx, name, domain string) int64 {
	t.Helper()
	ctx := t.Context()
	var xid string
	require.NoError(t, tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&xid))
	var id int64
	require.NoError(t, v.pool.QueryRow(ctx, v.r.Replace(`WITH c AS (
	UPDATE {s}.id_counter SET last_id = last_id + 1 RETURNING last_id AS id
), h AS (
	SELECT {safe_head} AS head
), p AS (
	INSERT INTO {s}.pending_appends (xid, first_id) SELECT $1::text::xid8, c.id FROM c
), d AS (
	INSERT INTO {s}.domains (domain, cursor) SELECT $2, h.head FROM h ON CONFLICT (domain) DO NOTHING
)
SELECT c.id FROM c`), xid, domain).Scan(&id))
	_, err := tx.Exec(ctx, v.r.Replace(`INSERT INTO {s}.activities `+v3Columns+`
	VALUES ($1, '', $2, '\x7b7d', ARRAY['https://' || $3 || '/inbox'], ARRAY[$3], '{}', false)`), id, name, domain)
	require.NoError(t, err)
	return id
}

// leaseAndSave leases every domain to owner and saves the given cursors,
// with the previous release's columns.
func (v v3) leaseAndSave(t *testing.T, owner string, cursors map[string]int64) {
	t.Helper()
	for domain, cursor := range cursors {
		_, err := v.pool.Exec(t.Context(), v.r.Replace(`UPDATE {s}.domains SET owner = $1, lease_token = lease_token + 1,
	lease_expires_at = now() + interval '1 hour', cursor = $3 WHERE domain = $2`), owner, domain, cursor)
		require.NoError(t, err)
	}
}

// deadLetter records a dead letter with the previous release's columns.
func (v v3) deadLetter(t *testing.T, activityID int64, domain string) {
	t.Helper()
	_, err := v.pool.Exec(t.Context(), v.r.Replace(`INSERT INTO {s}.dead_letters
	(activity_id, domain, inbox, actor, ordering_key, body, status, reason, attempts, created_at)
	VALUES ($1, $2, 'https://' || $2 || '/inbox', '', '', '\x7b7d', 410, 'gone', 1, now())`), activityID, domain)
	require.NoError(t, err)
}

// read returns the names of the activities after after that the previous
// release's reader returns.
func (v v3) read(t *testing.T, after int64) []string {
	t.Helper()
	rows, err := v.pool.Query(t.Context(), v.r.Replace(`SELECT ordering_key FROM {s}.activities
	WHERE id > $1 AND id <= {safe_head} ORDER BY id`), after)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

// names returns the ordering keys of acts, checking that their IDs
// strictly increase.
func names(t *testing.T, acts []store.Activity) []string {
	t.Helper()
	out := make([]string, len(acts))
	for i, a := range acts {
		if i > 0 {
			require.Greater(t, a.ID, acts[i-1].ID)
		}
		out[i] = a.OrderingKey
	}
	return out
}

// TestUpgradeFromVersion3 migrates a schema of the previous release, with
// activities, cursors, leases, dead letters and an open reservation in it,
// while a process of that release keeps appending and reading: nothing is
// lost, nothing is read twice, the open reservation still holds readers
// back until it commits, and the old process reads what the new one wrote.
func TestUpgradeFromVersion3(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t, &pgtest.Options{MaxConns: 8})
	ctx := t.Context()
	s, err := postgres.New(db.Pool, &postgres.Config{Schema: db.Schema, Logger: quietLogger()})
	require.NoError(t, err)
	defer s.Close()
	v, err := postgres.MigrateTo(ctx, s, 3)
	require.NoError(t, err)
	require.Equal(t, 3, v)
	old := newV3(db.Pool, db.Schema)

	// The old release at work: two activities, a domain leased, one
	// checkpointed with a dead letter, everything read by its reader.
	first := old.append(t, "v3-1", "a.example")
	second := old.append(t, "v3-2", "b.example")
	old.leaseAndSave(t, "old-owner", map[string]int64{"a.example": first, "b.example": second})
	old.deadLetter(t, first, "a.example")
	require.Equal(t, []string{"v3-1", "v3-2"}, old.read(t, 0))
	readTo := second // where the old reader stands

	// A caller's transaction of the old release, open across the upgrade.
	oldTx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer oldTx.Rollback(context.Background()) //nolint:errcheck // ends the test's transaction on failure
	late := old.appendTx(t, oldTx, "v3-late", "late.example")

	// The upgrade, while that transaction is open: it must not wait for it.
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err = s.Migrate(mctx)
	require.NoError(t, err)
	require.Equal(t, postgres.LatestVersion(), v)

	// Both releases write; the new one plainly and in a transaction.
	newID := appendOne(t, s, "c.example")
	require.Greater(t, newID, late)
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		a := newActivity("d.example")
		a.OrderingKey = "v4-tx"
		return s.AppendTx(ctx, tx, []store.NewActivity{a})
	}))
	old.append(t, "v3-3", "a.example")

	// Neither reader passes the open reservation.
	acts, err := s.Activities(ctx, readTo, 100)
	require.NoError(t, err)
	require.Empty(t, acts, "the new reader passed an open reservation of the old release")
	require.Empty(t, old.read(t, readTo))
	h, err := s.Head(ctx)
	require.NoError(t, err)
	require.Equal(t, late-1, h)
	open, err := s.OpenTransactions(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, open.Count)
	require.Equal(t, late, open.FirstID)

	require.NoError(t, oldTx.Commit(ctx))
	acts = readN(t, s, readTo, 4)
	got := names(t, acts)
	require.Equal(t, "v3-late", got[0])
	require.ElementsMatch(t, []string{"v3-late", "https://local.example/notes/1", "v3-3", "v4-tx"}, got,
		"lost or repeated activities across the upgrade")
	require.Equal(t, got, old.read(t, readTo), "the old release reads another log")
	all, err := s.Activities(ctx, 0, 100)
	require.NoError(t, err)
	require.Equal(t, []string{"v3-1", "v3-2"}, names(t, all)[:2])

	// Cursors, leases and dead letters are as the old release left them.
	doms, err := s.Domains(ctx, []string{"a.example", "b.example", "late.example", "d.example"})
	require.NoError(t, err)
	require.Len(t, doms, 4)
	byName := make(map[string]store.DomainState)
	for _, d := range doms {
		byName[d.Domain] = d
	}
	require.Equal(t, first, byName["a.example"].Cursor)
	require.Equal(t, second, byName["b.example"].Cursor)
	require.Equal(t, "old-owner", byName["a.example"].Owner)
	require.Less(t, byName["late.example"].Cursor, late)
	txID := acts[slices.Index(got, "v4-tx")].ID
	require.Less(t, byName["d.example"].Cursor, txID)
	dls, err := s.DeadLetters(ctx, store.DeadLetterFilter{Domain: "a.example"})
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, first, dls[0].ActivityID)

	// The new release's idempotency keys work beside the old release.
	k := newActivity("a.example")
	k.IdempotencyKey, k.IdempotencyWindow = "after-upgrade", time.Hour
	once, err := s.Append(ctx, []store.NewActivity{k})
	require.NoError(t, err)
	old.append(t, "v3-4", "a.example")
	twice, err := s.Append(ctx, []store.NewActivity{k})
	require.NoError(t, err)
	require.Equal(t, store.Appended{ID: once[0].ID, Duplicate: true}, twice[0])
}

// TestMigrateGivesUpOnLocks holds a lock a migration needs, as a session
// left idle in a transaction would: Migrate waits Config.LockTimeout, fails
// with ErrLockTimeout and changes nothing, and succeeds once the lock is
// gone.
func TestMigrateGivesUpOnLocks(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t, nil)
	ctx := t.Context()
	s, err := postgres.New(db.Pool, &postgres.Config{Schema: db.Schema, LockTimeout: 50 * time.Millisecond})
	require.NoError(t, err)
	defer s.Close()
	_, err = postgres.MigrateTo(ctx, s, 3)
	require.NoError(t, err)

	idle, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer idle.Rollback(context.Background()) //nolint:errcheck // ends the test's transaction on failure
	_, err = idle.Exec(ctx, "LOCK TABLE "+pgx.Identifier{db.Schema, "schema_migrations"}.Sanitize()+" IN EXCLUSIVE MODE")
	require.NoError(t, err)

	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = s.Migrate(mctx)
	require.ErrorIs(t, err, postgres.ErrLockTimeout)
	require.NoError(t, mctx.Err(), "Migrate waited for the lock past its timeout")
	v, err := s.Version(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, v)

	require.NoError(t, idle.Rollback(ctx))
	v, err = s.Migrate(ctx)
	require.NoError(t, err)
	require.Equal(t, postgres.LatestVersion(), v)
}

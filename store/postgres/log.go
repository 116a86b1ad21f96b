package postgres

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/apqueue/apqueue/store"
)

// How IDs are assigned so that a reader never skips a late commit.
//
// IDs come from one counter row (id_counter). Whoever takes IDs updates that
// row, and so holds its row lock until its transaction ends; IDs are therefore
// handed out in the order in which the transactions that took them become
// visible. There are two kinds of takers:
//
//   - Append runs one autocommit statement that takes the IDs, inserts the
//     activities and registers new domains. Its lock is held only while the
//     server runs the statement and commits it, with no client round trip in
//     between, so appends serialise only on the server.
//
//   - AppendTx cannot hold the lock in the caller's transaction (which may
//     stay open for long, and would stall every other enqueue). It takes the
//     IDs in a short autocommit statement on the store's own connection and,
//     in the same statement, records a reservation: the caller's transaction
//     ID (xid8) and the first reserved ID, in pending_appends. Then it inserts
//     the activities in the caller's transaction.
//
// The safe head is therefore the counter as the reader's snapshot sees it,
// lowered to just below the first ID of any reservation whose transaction is
// still in progress in that snapshot (pg_visible_in_snapshot is false).
// Everything at or below the safe head belongs to a transaction that has
// ended, so Activities and Head never pass an ID that may still commit. A
// long caller transaction holds readers back at its first ID, as it must,
// but never holds back other enqueues.
const safeHeadSQL = `(SELECT least(c.last_id, coalesce((
		SELECT min(p.first_id) - 1 FROM {s}.pending_appends p
		WHERE NOT pg_visible_in_snapshot(p.xid, pg_current_snapshot())), c.last_id))
	FROM {s}.id_counter c)`

// activityColumns turns the parameters of one batch into activity rows.
// Per-activity lists travel as JSON arrays, since PostgreSQL arrays cannot
// be ragged.
const activityColumns = `x.actor, x.ordering_key, x.body,
		ARRAY(SELECT jsonb_array_elements_text(x.inboxes::jsonb)),
		ARRAY(SELECT jsonb_array_elements_text(x.domains::jsonb)),
		ARRAY(SELECT jsonb_array_elements_text(x.audiences::jsonb)),
		x.all_domains`

const activityUnnest = `unnest($2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], $7::text[], $8::bool[])
		WITH ORDINALITY AS x(actor, ordering_key, body, inboxes, domains, audiences, all_domains, ord)`

// appendSQL takes $1 IDs, inserts the batch, registers the new domains in
// $9 at the safe head, and notifies channel $10, in one statement. The
// domain insert reads c, so it runs after the counter is locked: every
// statement that locks both locks the counter first.
const appendSQL = `WITH c AS (
	UPDATE {s}.id_counter SET last_id = last_id + $1::bigint RETURNING last_id - $1::bigint AS prev
), h AS (
	SELECT {safe_head} AS head
), a AS (
	INSERT INTO {s}.activities (id, actor, ordering_key, body, inboxes, domains, audiences, all_domains)
	SELECT c.prev + x.ord, ` + activityColumns + `
	FROM c, ` + activityUnnest + `
), d AS (
	INSERT INTO {s}.domains (domain, cursor)
	SELECT u.domain, h.head FROM c, h, unnest($9::text[]) WITH ORDINALITY AS u(domain, ord)
	ORDER BY u.ord
	ON CONFLICT (domain) DO NOTHING
), n AS (
	SELECT pg_notify($10, '') FROM c
)
SELECT c.prev FROM c, n`

// reserveSQL takes $2 IDs for transaction $1, records the reservation,
// forgets reservations of ended transactions and registers the new domains
// in $3 at the safe head.
//
// It commits asynchronously (synchronous_commit off for this statement's
// transaction only), so the counter's lock is not held through a WAL flush
// and reservations do not serialise on the disk. That loses nothing: the
// reservation matters only if the caller's transaction commits, and that
// commit, being later in the WAL, flushes the reservation with it. If the
// server crashes first, the caller's transaction is lost too, and reusing
// its IDs is harmless.
const reserveSQL = `WITH async AS (
	SELECT set_config('synchronous_commit', 'off', true)
), c AS (
	UPDATE {s}.id_counter SET last_id = last_id + $2::bigint RETURNING last_id - $2::bigint AS prev
), h AS (
	SELECT {safe_head} AS head
), p AS (
	INSERT INTO {s}.pending_appends (xid, first_id) SELECT $1::text::xid8, c.prev + 1 FROM c
), gc AS (
	DELETE FROM {s}.pending_appends q USING c
	WHERE pg_visible_in_snapshot(q.xid, pg_current_snapshot())
), d AS (
	INSERT INTO {s}.domains (domain, cursor)
	SELECT u.domain, h.head FROM c, h, unnest($3::text[]) WITH ORDINALITY AS u(domain, ord)
	ORDER BY u.ord
	ON CONFLICT (domain) DO NOTHING
)
SELECT c.prev FROM c, async`

// insertTxSQL inserts a batch whose IDs start after $1, in the caller's
// transaction, and notifies channel $9 when that transaction commits.
const insertTxSQL = `WITH a AS (
	INSERT INTO {s}.activities (id, actor, ordering_key, body, inboxes, domains, audiences, all_domains)
	SELECT $1::bigint + x.ord, ` + activityColumns + `
	FROM ` + activityUnnest + `
)
SELECT pg_notify($9, '')`

const activitiesSQL = `SELECT a.id, a.enqueued_at, a.actor, a.ordering_key, a.body, a.inboxes, a.domains, a.audiences, a.all_domains
FROM {s}.activities a
WHERE a.id > $1 AND a.id <= {safe_head}
ORDER BY a.id
LIMIT $2`

const headSQL = `SELECT coalesce({safe_head}, 0)`

// batch is a validated batch of activities as statement parameters.
type batch struct {
	n                                   int
	actors, keys, inboxes, doms, audies []string
	bodies                              [][]byte
	all                                 []bool
	// newDomains are the distinct domains the batch names, sorted so that
	// concurrent registrations lock them in one order.
	newDomains []string
}

func newBatch(op string, activities []store.NewActivity) (*batch, error) {
	if err := store.CheckAppend(activities); err != nil {
		return nil, refused(op, err)
	}
	b := &batch{n: len(activities)}
	for _, a := range activities {
		b.actors = append(b.actors, a.Actor)
		b.keys = append(b.keys, a.OrderingKey)
		b.bodies = append(b.bodies, a.Body)
		b.inboxes = append(b.inboxes, jsonList(a.Inboxes))
		b.doms = append(b.doms, jsonList(a.Domains))
		b.audies = append(b.audies, jsonList(a.Audiences))
		b.all = append(b.all, a.AllDomains)
		b.newDomains = append(b.newDomains, a.Domains...)
	}
	slices.Sort(b.newDomains)
	b.newDomains = slices.Compact(b.newDomains)
	if b.newDomains == nil {
		b.newDomains = []string{}
	}
	return b, nil
}

// jsonList encodes a list of strings as a JSON array; nil becomes [].
func jsonList(l []string) string {
	if len(l) == 0 {
		return "[]"
	}
	out, _ := json.Marshal(l) // cannot fail for []string
	return string(out)
}

// ids returns the IDs of a batch whose IDs follow prev.
func (b *batch) ids(prev int64) []int64 {
	out := make([]int64, b.n)
	for i := range out {
		out[i] = prev + int64(i) + 1
	}
	return out
}

// Append implements store.Store, in one statement: see the comment on
// safeHeadSQL for how IDs are assigned.
func (s *Store) Append(ctx context.Context, activities []store.NewActivity) ([]int64, error) {
	const op = "append"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	b, err := newBatch(op, activities)
	if err != nil {
		return nil, err
	}
	var prev int64
	s.count(1)
	err = s.pool.QueryRow(ctx, s.sql.append, b.n, b.actors, b.keys, b.bodies, b.inboxes, b.doms, b.audies, b.all,
		b.newDomains, s.channel).Scan(&prev)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return b.ids(prev), nil
}

// Tx binds the caller's transaction tx (a *pgxpool.Tx is one), on the same
// database as the store, to the store, for queue.EnqueueTx: appends made
// through it are AppendTx calls.
func (s *Store) Tx(tx pgx.Tx) store.Tx { return boundTx{s: s, tx: tx} }

type boundTx struct {
	s  *Store
	tx pgx.Tx
}

func (b boundTx) Append(ctx context.Context, activities []store.NewActivity) ([]int64, error) {
	return b.s.AppendTx(ctx, b.tx, activities)
}

// AppendTx appends activities inside the caller's transaction tx, on the
// same database as the store. The activities are appended
// if and only if tx commits, and the commit notifies listeners. It costs
// three round trips: the transaction's ID is read in tx, IDs are reserved
// (and new domains registered) on the store's own connection, and the
// activities are inserted in tx. Readers do not pass the reserved IDs until
// tx ends, so call AppendTx late in a transaction that commits soon.
//
// New domains are registered at once, outside tx: if tx rolls back they stay
// known, with nothing to deliver, which is harmless.
func (s *Store) AppendTx(ctx context.Context, ptx pgx.Tx, activities []store.NewActivity) ([]int64, error) {
	const op = "append in transaction"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if ptx == nil {
		return nil, invalid(op, "nil transaction")
	}
	b, err := newBatch(op, activities)
	if err != nil {
		return nil, err
	}

	var xid string
	s.count(1)
	if err := ptx.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&xid); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	rp, err := s.reservePool(ctx)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	var prev int64
	s.count(1)
	if err := rp.QueryRow(ctx, s.sql.reserve, xid, b.n, b.newDomains).Scan(&prev); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	s.count(1)
	if _, err := ptx.Exec(ctx, s.sql.insertTx, prev, b.actors, b.keys, b.bodies, b.inboxes, b.doms, b.audies, b.all,
		s.channel); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return b.ids(prev), nil
}

// Activities implements store.Store. It returns nothing past the safe head
// (see safeHeadSQL).
func (s *Store) Activities(ctx context.Context, after int64, limit int) ([]store.Activity, error) {
	const op = "read activities"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if err := store.CheckBatchSize(limit); err != nil {
		return nil, refused(op, err)
	}
	s.count(1)
	rows, err := s.pool.Query(ctx, s.sql.activities, after, limit)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	out := make([]store.Activity, 0, min(limit, 256))
	var at pgtype.Timestamptz
	for rows.Next() {
		var a store.Activity
		if err := rows.Scan(&a.ID, &at, &a.Actor, &a.OrderingKey, &a.Body, &a.Inboxes, &a.Domains, &a.Audiences, &a.AllDomains); err != nil {
			rows.Close()
			return nil, s.fail(ctx, op, err)
		}
		a.EnqueuedAt = fromTS(at)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// Head implements store.Store: it returns the safe head.
func (s *Store) Head(ctx context.Context) (int64, error) {
	const op = "read head"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	var h int64
	s.count(1)
	if err := s.pool.QueryRow(ctx, s.sql.head).Scan(&h); err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return h, nil
}

package sqlite

import (
	"context"
	"database/sql"
	"slices"

	"github.com/apqueue/apqueue/store"
)

// How IDs are assigned so that a reader never skips a late commit.
//
// IDs come from one counter row (apqueue_id_counter). Whoever takes IDs
// first updates that row, in the same transaction that inserts the
// activities, and SQLite lets one transaction at a time write to a database
// file, across every connection and every process: the writer holds the
// file's write lock from its first write to its commit or rollback. So the
// transaction that takes IDs n+1..m commits (or rolls back, and hands the
// same IDs out again) before any other can take m+1: IDs become visible in
// ID order, and a reader's snapshot holds every committed ID up to the
// highest it sees. Activities can therefore return whatever its snapshot
// holds, and Head is the counter as the snapshot sees it.
//
// This holds for both kinds of taker:
//
//   - Append takes the IDs, inserts the batch and registers new domains in a
//     BEGIN IMMEDIATE transaction of its own (see write), a few statements
//     with no network in between.
//
//   - AppendTx runs the same statements in the caller's *sql.Tx, whose first
//     write takes the write lock, held until the caller commits. Every other
//     writer (other enqueues, checkpoints, lease renewals) waits for that
//     commit, in this process or any other: this is SQLite's single writer,
//     and why a caller should call EnqueueTx late in a transaction that
//     commits soon.

// takeIDsSQL takes ? IDs and returns the last one taken before. Being a
// write, it is the statement that takes the write lock.
const takeIDsSQL = `UPDATE apqueue_id_counter SET last_id = last_id + ? RETURNING last_id - ?`

const activityInsertColumns = `INSERT INTO apqueue_activities
	(id, enqueued_at, actor, ordering_key, body, inboxes, domains, audiences, all_domains) VALUES `

const activityCols = 9

const activitiesSQL = `SELECT id, enqueued_at, actor, ordering_key, body, inboxes, domains, audiences, all_domains
FROM apqueue_activities
WHERE id > ?
ORDER BY id
LIMIT ?`

const headSQL = `SELECT last_id FROM apqueue_id_counter`

// batch is a validated batch of activities.
type batch struct {
	acts []store.NewActivity
	// newDomains are the distinct domains the batch names, sorted.
	newDomains []string
	// keyed says whether an activity of the batch has an idempotency key.
	keyed bool
}

func newBatch(op string, activities []store.NewActivity) (*batch, error) {
	if err := store.CheckAppend(activities); err != nil {
		return nil, refused(op, err)
	}
	b := &batch{acts: activities}
	for _, a := range activities {
		b.newDomains = append(b.newDomains, a.Domains...)
		b.keyed = b.keyed || a.IdempotencyKey != ""
	}
	slices.Sort(b.newDomains)
	b.newDomains = slices.Compact(b.newDomains)
	return b, nil
}

// appendIn appends b with q (a write transaction) and returns the IDs of
// its activities: it takes the IDs, inserts the activities and registers
// the new domains at the head as it was before this batch. An activity
// whose idempotency key is remembered (or was given earlier in b) is not
// inserted: its ID is that of the activity first appended with the key.
// The suspended domains are read after the write lock is taken, so no
// suspension commits between the check and the append.
func (s *Store) appendIn(ctx context.Context, q querier, b *batch) ([]store.Appended, error) {
	// ids holds, until the IDs are taken, the ID of each duplicate (or,
	// negated, the position among the kept activities of the one it
	// repeats); zero for the activities kept.
	ids := make([]int64, len(b.acts))
	keep := b.acts
	if b.keyed {
		known, err := s.knownKeys(ctx, q, b)
		if err != nil {
			return nil, err
		}
		keep = make([]store.NewActivity, 0, len(b.acts))
		for i, a := range b.acts {
			if id, dup := known[a.IdempotencyKey]; dup && a.IdempotencyKey != "" {
				ids[i] = id
				continue
			}
			keep = append(keep, a)
			if a.IdempotencyKey != "" {
				known[a.IdempotencyKey] = -int64(len(keep))
			}
		}
	}
	var prev int64
	n := len(keep)
	s.count(1)
	if err := q.QueryRowContext(ctx, takeIDsSQL, n, n).Scan(&prev); err != nil {
		return nil, err
	}
	at := now()
	err := chunks(n, activityCols, func(from, to int) error {
		args := make([]any, 0, (to-from)*activityCols)
		for i := from; i < to; i++ {
			a := keep[i]
			args = append(args, prev+int64(i)+1, at, a.Actor, a.OrderingKey, a.Body,
				jsonList(a.Inboxes), jsonList(a.Domains), jsonList(a.Audiences), a.AllDomains)
		}
		s.count(1)
		_, err := q.ExecContext(ctx, activityInsertColumns+values(to-from, activityCols), args...)
		return err
	})
	if err != nil {
		return nil, err
	}
	if b.keyed {
		if err := s.rememberKeys(ctx, q, keep, prev, at); err != nil {
			return nil, err
		}
	}
	suspended, err := s.suspendedAmong(ctx, q, b.newDomains)
	if err != nil {
		return nil, err
	}
	res := make([]store.Appended, len(ids))
	k := int64(0)
	for i, id := range ids {
		switch {
		case id < 0:
			res[i] = store.Appended{ID: prev - id, Duplicate: true}
		case id > 0:
			res[i] = store.Appended{ID: id, Duplicate: true}
		default:
			k++
			res[i].ID = prev + k
			res[i].Suspended = suspendedOf(b.acts[i].Domains, suspended)
		}
	}
	if err := s.insertDomains(ctx, q, b.newDomains, prev); err != nil {
		return nil, err
	}
	return res, nil
}

// suspendedSQL lists the suspended domains among those given after it.
const suspendedSQL = `SELECT domain FROM apqueue_domains WHERE status = 'suspended' AND domain IN `

// suspendedAmong returns which of domains are suspended.
func (s *Store) suspendedAmong(ctx context.Context, q querier, domains []string) (map[string]bool, error) {
	var out map[string]bool
	err := chunks(len(domains), 1, func(from, to int) error {
		args := make([]any, to-from)
		for i, d := range domains[from:to] {
			args[i] = d
		}
		s.count(1)
		rows, err := q.QueryContext(ctx, suspendedSQL+values(1, to-from), args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				return err
			}
			if out == nil {
				out = make(map[string]bool)
			}
			out[d] = true
		}
		return rows.Err()
	})
	return out, err
}

// suspendedOf returns the domains that are in suspended, in order.
func suspendedOf(domains []string, suspended map[string]bool) []string {
	var out []string
	for _, d := range domains {
		if suspended[d] {
			out = append(out, d)
		}
	}
	return out
}

// lockForKeysSQL takes the write lock without changing anything, so that
// the keys read next cannot change before the append writes.
const lockForKeysSQL = `UPDATE apqueue_id_counter SET last_id = last_id`

// knownKeysSQL returns the unexpired keys (expires_at after ?) among the
// ones listed after it.
const knownKeysSQL = `SELECT key, activity_id FROM apqueue_idempotency_keys WHERE expires_at > ? AND key IN `

// knownKeys takes the write lock and returns the IDs of the activities
// appended with the keys of b, of the keys that have not expired.
func (s *Store) knownKeys(ctx context.Context, q querier, b *batch) (map[string]int64, error) {
	s.count(1)
	if _, err := q.ExecContext(ctx, lockForKeysSQL); err != nil {
		return nil, err
	}
	var keys []any
	for _, a := range b.acts {
		if a.IdempotencyKey != "" {
			keys = append(keys, a.IdempotencyKey)
		}
	}
	known := make(map[string]int64)
	at := now()
	err := chunks(len(keys), 2, func(from, to int) error {
		s.count(1)
		rows, err := q.QueryContext(ctx, knownKeysSQL+values(1, to-from), append([]any{at}, keys[from:to]...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				k  string
				id int64
			)
			if err := rows.Scan(&k, &id); err != nil {
				return err
			}
			known[k] = id
		}
		return rows.Err()
	})
	return known, err
}

// rememberKeysSQL records keys, replacing expired records of the same keys
// (appendIn appends a key only when its record expired or is absent).
const rememberKeysSQL = `INSERT OR REPLACE INTO apqueue_idempotency_keys (key, activity_id, expires_at) VALUES `

// rememberKeys records the keys of the activities kept, numbered from
// prev+1 and appended at at.
func (s *Store) rememberKeys(ctx context.Context, q querier, kept []store.NewActivity, prev, at int64) error {
	var args []any
	for i, a := range kept {
		if a.IdempotencyKey != "" {
			args = append(args, a.IdempotencyKey, prev+int64(i)+1, at+a.IdempotencyWindow.Microseconds())
		}
	}
	return chunks(len(args)/3, 3, func(from, to int) error {
		s.count(1)
		_, err := q.ExecContext(ctx, rememberKeysSQL+values(to-from, 3), args[3*from:3*to]...)
		return err
	})
}

// insertDomains registers the domains q does not know yet with their
// cursor at cursor.
func (s *Store) insertDomains(ctx context.Context, q querier, domains []string, cursor int64) error {
	return chunks(len(domains), 2, func(from, to int) error {
		args := make([]any, 0, 2*(to-from))
		for _, d := range domains[from:to] {
			args = append(args, d, cursor)
		}
		s.count(1)
		_, err := q.ExecContext(ctx, `INSERT INTO apqueue_domains (domain, cursor) VALUES `+values(to-from, 2)+
			` ON CONFLICT (domain) DO NOTHING`, args...)
		return err
	})
}

// Append implements store.Store in one write transaction: see the comment
// on takeIDsSQL for how IDs are assigned. Listen calls on this Store are
// notified once it has committed.
func (s *Store) Append(ctx context.Context, activities []store.NewActivity) ([]store.Appended, error) {
	const op = "append"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	b, err := newBatch(op, activities)
	if err != nil {
		return nil, err
	}
	var res []store.Appended
	err = s.write(ctx, func(q querier) error {
		var err error
		res, err = s.appendIn(ctx, q, b)
		return err
	})
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	s.notifyListeners()
	return res, nil
}

// Tx binds the caller's transaction tx, on the database of the store, to
// the store, for queue.EnqueueTx: appends made through it are AppendTx
// calls.
func (s *Store) Tx(tx *sql.Tx) store.Tx { return boundTx{s: s, tx: tx} }

type boundTx struct {
	s  *Store
	tx *sql.Tx
}

func (b boundTx) Append(ctx context.Context, activities []store.NewActivity) ([]store.Appended, error) {
	return b.s.AppendTx(ctx, b.tx, activities)
}

// AppendTx appends activities inside the caller's transaction tx, on the
// database of the store: they are appended, and their new domains
// registered, if and only if tx commits. Its first statement writes, so tx
// holds the database's write lock from then until it ends: every other
// writer, in every process, waits for it (see the package documentation
// on transactions). The Listen calls of this Store notice the commit
// within milliseconds; those of other processes at their next read of the
// counter (Config.ListenInterval).
//
// Begin tx IMMEDIATE (the _txlock=immediate DSN parameter of the common
// drivers) when it reads before it enqueues: a deferred transaction that
// has read cannot take the write lock once another connection has written
// since, and fails with SQLITE_BUSY (ErrBusy) whatever the busy_timeout.
func (s *Store) AppendTx(ctx context.Context, tx *sql.Tx, activities []store.NewActivity) ([]store.Appended, error) {
	const op = "append in transaction"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if tx == nil {
		return nil, invalid(op, "nil transaction")
	}
	b, err := newBatch(op, activities)
	if err != nil {
		return nil, err
	}
	res, err := s.appendIn(ctx, tx, b)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	s.txAppended(slices.Max(store.AppendedIDs(res)))
	return res, nil
}

// Activities implements store.Store. A read is one snapshot, which holds
// every committed ID up to the highest it holds (see takeIDsSQL), so it
// needs no bound of its own.
func (s *Store) Activities(ctx context.Context, after int64, limit int) ([]store.Activity, error) {
	const op = "read activities"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if err := store.CheckBatchSize(limit); err != nil {
		return nil, refused(op, err)
	}
	s.count(1)
	rows, err := s.query(ctx, activitiesSQL, after, limit)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	defer rows.Close()
	out := make([]store.Activity, 0, min(limit, 256))
	for rows.Next() {
		a, err := scanActivity(rows)
		if err != nil {
			return nil, s.fail(ctx, op, err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// scanActivity reads a row of activitiesSQL.
func scanActivity(rows *sql.Rows) (store.Activity, error) {
	var (
		a                          store.Activity
		at                         sql.NullInt64
		inboxes, domains, audience string
	)
	if err := rows.Scan(&a.ID, &at, &a.Actor, &a.OrderingKey, &a.Body, &inboxes, &domains, &audience, &a.AllDomains); err != nil {
		return a, err
	}
	a.EnqueuedAt = fromMicros(at)
	var err error
	if a.Inboxes, err = parseList(inboxes); err != nil {
		return a, err
	}
	if a.Domains, err = parseList(domains); err != nil {
		return a, err
	}
	a.Audiences, err = parseList(audience)
	return a, err
}

// Head implements store.Store: the counter, which every committed append
// raised to its last ID.
func (s *Store) Head(ctx context.Context) (int64, error) {
	const op = "read head"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	h, err := s.head(ctx)
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return h, nil
}

// head reads the counter.
func (s *Store) head(ctx context.Context) (int64, error) {
	st, err := s.prepared(ctx, headSQL)
	if err != nil {
		return 0, err
	}
	var h int64
	s.count(1)
	err = st.QueryRowContext(ctx).Scan(&h)
	return h, err
}

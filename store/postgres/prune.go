package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/apqueue/apqueue/store"
)

// pruneFloorSQL computes the prune point (the lowest cursor of a live
// domain, or the safe head when none is live), fast-forwards the dead
// domains below it (and the suspended ones, which it does not report) and forgets owners long gone. It runs with the domains
// table locked against writes (see Prune), so no domain can be revived or
// registered below the point while it is chosen. It returns the point and
// the domains moved with their old cursors.
const pruneFloorSQL = `WITH h AS (
	SELECT coalesce({safe_head}, 0) AS head
), b AS (
	SELECT greatest(least(h.head, coalesce((SELECT min(cursor) FROM {s}.domains WHERE status NOT IN ('dead', 'suspended')), h.head)), 0) AS below
	FROM h
), old AS (
	SELECT d.domain, d.cursor, d.status FROM {s}.domains d, b
	WHERE d.status IN ('dead', 'suspended') AND d.cursor < b.below
), ff AS (
	UPDATE {s}.domains d SET cursor = b.below, revision = d.revision + 1 FROM old, b
	WHERE d.domain = old.domain
	RETURNING d.domain, old.cursor AS from_cursor, old.status
), gone AS (
	DELETE FROM {s}.owners WHERE live_until < now() - interval '1 day'
)
SELECT b.below,
	coalesce((SELECT array_agg(domain ORDER BY domain COLLATE "C") FROM ff WHERE status = 'dead'), '{}'),
	coalesce((SELECT array_agg(from_cursor ORDER BY domain COLLATE "C") FROM ff WHERE status = 'dead'), '{}')
FROM b`

// pruneDeleteSQL deletes up to $2 of the activities at or below the prune
// point $1, lowest first.
const pruneDeleteSQL = `DELETE FROM {s}.activities
WHERE id IN (SELECT id FROM {s}.activities WHERE id <= $1 ORDER BY id LIMIT $2)`

// pruneKeysSQL deletes up to $2 of the idempotency keys expired more than
// $1 microseconds ago, the oldest first. A key that an append is claiming
// again holds its row lock: the delete waits for it at most the lock
// timeout (see maintain).
const pruneKeysSQL = `DELETE FROM {s}.idempotency_keys
WHERE key IN (SELECT key FROM {s}.idempotency_keys
	WHERE expires_at <= statement_timestamp() - $1::bigint * interval '1 microsecond' ORDER BY expires_at LIMIT $2)`

// pruneBatch bounds the rows one maintenance statement deletes, so that
// each commits soon, holds its row locks briefly and leaves vacuum work in
// small steps.
const pruneBatch = 5000

// Prune implements store.Store. It first fixes the prune point in a short
// transaction that holds the domains table against writes (SHARE ROW
// EXCLUSIVE: readers of domains go on; checkpoints, registrations and the
// statements that number activities wait for it), fast-forwarding the
// dead domains behind it, so that from then on every domain's cursor is at
// or above the point; then it deletes up to the point outside that lock,
// in statements of at most pruneBatch rows.
//
// Every lock waits at most Config.LockTimeout (see maintain): when another
// session holds the domains table, Prune changes nothing and returns an
// error matching ErrLockTimeout, and the next run tries again.
func (s *Store) Prune(ctx context.Context) (store.PruneResult, error) {
	const op = "prune"
	if err := checkCtx(ctx, op); err != nil {
		return store.PruneResult{}, err
	}
	var (
		res     store.PruneResult
		domains []string
		from    []int64
	)
	err := s.maintain(ctx, func(tx pgx.Tx) error {
		s.count(2)
		if _, err := tx.Exec(ctx, s.sql.pruneLock); err != nil {
			return err
		}
		return tx.QueryRow(ctx, s.sql.pruneFloor).Scan(&res.Below, &domains, &from)
	})
	if err != nil {
		return store.PruneResult{}, s.fail(ctx, op, err)
	}
	for i, d := range domains {
		res.FastForwarded = append(res.FastForwarded, store.FastForward{Domain: d, From: from[i], To: res.Below})
	}
	deleted, err := s.deleteInBatches(ctx, s.sql.pruneDelete, res.Below)
	res.Deleted = deleted
	if err != nil {
		return res, s.fail(ctx, op, err)
	}
	res.ExpiredKeys, err = s.deleteInBatches(ctx, s.sql.pruneKeys, int64(0))
	if err != nil {
		return res, s.fail(ctx, op, err)
	}
	return res, nil
}

// deleteInBatches runs query, a DELETE of at most $2 rows selected by $1,
// each time in a maintenance transaction of its own, until it deletes
// fewer than pruneBatch rows, and returns how many it deleted in all.
func (s *Store) deleteInBatches(ctx context.Context, query string, arg any) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.maintain(ctx, func(tx pgx.Tx) error {
			s.count(1)
			tag, err := tx.Exec(ctx, query, arg, pruneBatch)
			n = tag.RowsAffected()
			return err
		})
		total += n
		if err != nil || n < pruneBatch {
			return total, err
		}
	}
}

// maintain runs fn in a transaction in which every lock waits at most
// Config.LockTimeout (lock_timeout, set for this transaction only, so it
// works through pgBouncer in transaction mode).
func (s *Store) maintain(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		s.count(3) // BEGIN, lock_timeout, COMMIT
		if _, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", s.lockTimeout); err != nil {
			return err
		}
		return fn(tx)
	})
}

package sqlite

import (
	"context"

	"github.com/apqueue/apqueue/store"
)

// pruneFloorSQL computes the prune point: the lowest cursor of a live
// domain (neither dead nor suspended), or the head when none is live.
const pruneFloorSQL = `SELECT max(0, min(c.last_id, coalesce(
	(SELECT min(cursor) FROM apqueue_domains WHERE status NOT IN ('dead', 'suspended')), c.last_id)))
FROM apqueue_id_counter c`

// behindSQL lists the dead domains below the prune point ?, with their
// cursors; fastForwardSQL then moves them, and the suspended ones, up to
// it. Both run in the one
// write transaction of Prune, so they see the same domains.
const behindSQL = `SELECT domain, cursor FROM apqueue_domains WHERE status = 'dead' AND cursor < ? ORDER BY domain`

const fastForwardSQL = `UPDATE apqueue_domains SET cursor = ?, revision = revision + 1 WHERE status IN ('dead', 'suspended') AND cursor < ?`

// forgetOwnersSQL forgets owners gone for a day (live_until before ?);
// forgetMarksSQL then their change marks (one that comes back reads mark
// 0, which tells it to look at its whole list).
const (
	forgetOwnersSQL = `DELETE FROM apqueue_owners WHERE live_until < ?`
	forgetMarksSQL  = `DELETE FROM apqueue_owner_marks WHERE owner NOT IN (SELECT owner FROM apqueue_owners)`
)

// pruneDeleteSQL deletes up to ?2 of the activities at or below the prune
// point ?1, lowest first.
const pruneDeleteSQL = `DELETE FROM apqueue_activities WHERE id IN (
	SELECT id FROM apqueue_activities WHERE id <= ?1 ORDER BY id LIMIT ?2)`

// pruneKeysSQL deletes up to ?2 idempotency keys expired at ?1.
const pruneKeysSQL = `DELETE FROM apqueue_idempotency_keys WHERE key IN (
	SELECT key FROM apqueue_idempotency_keys WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)`

// pruneBatch bounds the rows one statement of Prune deletes, so that each
// write transaction holds the write lock briefly and a prune cut short
// keeps what it deleted.
const pruneBatch = 5000

// pruneDay is how long an owner that left is remembered, in microseconds.
const pruneDay = 24 * 60 * 60 * 1_000_000

// Prune implements store.Store. One write transaction fixes the prune
// point and fast-forwards the dead domains behind it, holding the write
// lock, so that no domain can be revived or registered below the point
// meanwhile; from then on every domain's cursor is at or above it. Then it
// deletes up to the point, and the expired idempotency keys, in write
// transactions of their own of at most pruneBatch rows each, so that
// enqueues wait for none long and a prune cut short keeps its progress.
func (s *Store) Prune(ctx context.Context) (store.PruneResult, error) {
	const op = "prune"
	if err := checkCtx(ctx, op); err != nil {
		return store.PruneResult{}, err
	}
	var res store.PruneResult
	err := s.write(ctx, func(q querier) error {
		res = store.PruneResult{}
		s.count(1)
		if err := q.QueryRowContext(ctx, pruneFloorSQL).Scan(&res.Below); err != nil {
			return err
		}
		s.count(1)
		rows, err := q.QueryContext(ctx, behindSQL, res.Below)
		if err != nil {
			return err
		}
		for rows.Next() {
			ff := store.FastForward{To: res.Below}
			if err := rows.Scan(&ff.Domain, &ff.From); err != nil {
				rows.Close()
				return err
			}
			res.FastForwarded = append(res.FastForwarded, ff)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		s.count(3)
		if _, err := q.ExecContext(ctx, fastForwardSQL, res.Below, res.Below); err != nil {
			return err
		}
		if _, err := q.ExecContext(ctx, forgetOwnersSQL, now()-pruneDay); err != nil {
			return err
		}
		_, err = q.ExecContext(ctx, forgetMarksSQL)
		return err
	})
	if err != nil {
		return store.PruneResult{}, s.fail(ctx, op, err)
	}
	res.Deleted, err = s.deleteInBatches(ctx, pruneDeleteSQL, res.Below)
	if err != nil {
		return res, s.fail(ctx, op, err)
	}
	res.ExpiredKeys, err = s.deleteInBatches(ctx, pruneKeysSQL, now())
	if err != nil {
		return res, s.fail(ctx, op, err)
	}
	return res, nil
}

// deleteInBatches runs query, a DELETE of at most ?2 rows selected by ?1,
// each time in a write transaction of its own, until it deletes fewer than
// pruneBatch rows, and returns how many it deleted in all.
func (s *Store) deleteInBatches(ctx context.Context, query string, arg int64) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.write(ctx, func(q querier) error {
			s.count(1)
			r, err := q.ExecContext(ctx, query, arg, pruneBatch)
			if err != nil {
				return err
			}
			n, err = r.RowsAffected()
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}

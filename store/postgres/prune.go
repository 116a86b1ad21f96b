package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/apqueue/apqueue/store"
)

// pruneFloorSQL computes the prune point (the lowest cursor of a live
// domain, or the safe head when none is live), fast-forwards the dead
// domains below it and forgets owners long gone. It runs with the domains
// table locked against writes (see Prune), so no domain can be revived or
// registered below the point while it is chosen. It returns the point and
// the domains moved with their old cursors.
const pruneFloorSQL = `WITH h AS (
	SELECT coalesce({safe_head}, 0) AS head
), b AS (
	SELECT greatest(least(h.head, coalesce((SELECT min(cursor) FROM {s}.domains WHERE status <> 'dead'), h.head)), 0) AS below
	FROM h
), old AS (
	SELECT d.domain, d.cursor FROM {s}.domains d, b
	WHERE d.status = 'dead' AND d.cursor < b.below
), ff AS (
	UPDATE {s}.domains d SET cursor = b.below, revision = d.revision + 1 FROM old, b
	WHERE d.domain = old.domain
	RETURNING d.domain, old.cursor AS from_cursor
), gone AS (
	DELETE FROM {s}.owners WHERE live_until < now() - interval '1 day'
)
SELECT b.below,
	coalesce((SELECT array_agg(domain ORDER BY domain COLLATE "C") FROM ff), '{}'),
	coalesce((SELECT array_agg(from_cursor ORDER BY domain COLLATE "C") FROM ff), '{}')
FROM b`

// pruneDeleteSQL deletes the activities at or below the prune point $1.
const pruneDeleteSQL = `DELETE FROM {s}.activities WHERE id <= $1`

// Prune implements store.Store. It first fixes the prune point in a short
// transaction that holds the domains table against writes (SHARE ROW
// EXCLUSIVE: readers go on, checkpoints and registrations wait for it),
// fast-forwarding the dead domains behind it, so that from then on every
// domain's cursor is at or above the point; then it deletes up to the point
// outside that lock.
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
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		s.count(4) // BEGIN, LOCK, the floor statement, COMMIT
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
	s.count(1)
	tag, err := s.pool.Exec(ctx, s.sql.pruneDelete, res.Below)
	if err != nil {
		return res, s.fail(ctx, op, err)
	}
	res.Deleted = tag.RowsAffected()
	return res, nil
}

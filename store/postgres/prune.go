package postgres

import (
	"context"

	"github.com/apqueue/apqueue/store"
)

// pruneSQL computes the prune point (the lowest cursor of a live domain, or
// the safe head when none is live), fast-forwards the dead domains below it,
// deletes the activities at or below it, and forgets owners long gone, in
// one statement. It returns the point, the number deleted, and the domains
// moved with their old cursors.
const pruneSQL = `WITH h AS (
	SELECT coalesce({safe_head}, 0) AS head
), b AS (
	SELECT greatest(least(h.head, coalesce((SELECT min(cursor) FROM {s}.domains WHERE status <> 'dead'), h.head)), 0) AS below
	FROM h
), old AS (
	SELECT d.domain, d.cursor FROM {s}.domains d, b
	WHERE d.status = 'dead' AND d.cursor < b.below
	ORDER BY d.domain COLLATE "C"
	FOR UPDATE OF d
), ff AS (
	UPDATE {s}.domains d SET cursor = b.below, revision = d.revision + 1 FROM old, b
	WHERE d.domain = old.domain
	RETURNING d.domain, old.cursor AS from_cursor
), del AS (
	DELETE FROM {s}.activities a USING b WHERE a.id <= b.below
	RETURNING 1
), gone AS (
	DELETE FROM {s}.owners WHERE live_until < now() - interval '1 day'
)
SELECT b.below,
	(SELECT count(*) FROM del),
	coalesce((SELECT array_agg(domain ORDER BY domain COLLATE "C") FROM ff), '{}'),
	coalesce((SELECT array_agg(from_cursor ORDER BY domain COLLATE "C") FROM ff), '{}')
FROM b`

// Prune implements store.Store in one statement.
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
	s.count(1)
	if err := s.pool.QueryRow(ctx, s.sql.prune).Scan(&res.Below, &res.Deleted, &domains, &from); err != nil {
		return store.PruneResult{}, s.fail(ctx, op, err)
	}
	for i, d := range domains {
		res.FastForwarded = append(res.FastForwarded, store.FastForward{Domain: d, From: from[i], To: res.Below})
	}
	return res, nil
}

package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/apqueue/apqueue/store"
)

var _ store.LeaseKeeper = (*Store)(nil)

// KeepLeases renews an owner's leases in one statement whose cost does not
// grow with the number of leases it holds. Leases given to it follow their
// owner (see leases.go), so the owner's row keeps them all alive; a call
// without Full writes that row, reads the owner's change mark (a row of
// owner_marks, moved by triggers: see migration 0009) and touches only the
// domain rows listed (leases new since the last call, cursors that rose).
// An idle process holding 20,000 domains reads and writes a few rows per
// renewal instead of reading all 20,000 and sending their names both ways.
// A Full call is renewSQL's scan of the owner's rows, with the mark read in
// the same snapshot, so that a change committed after the scan moves the
// mark past what the call returns.

// markSQL is the owner $1's change mark, 0 when nothing ever moved it.
const markSQL = `SELECT coalesce((SELECT mk.mark FROM {s}.owner_marks mk WHERE mk.owner = $1), 0) AS mark`

// keepListedSQL is the j of a call without Full: the listed leases ($3
// domains, $4 tokens, $5 settled-through IDs) the owner $1 still holds,
// through the primary key, and what each needs (see renewSQL).
const keepListedSQL = `SELECT d.domain, d.lease_token, d.revision, l.token, l.settled,
		CASE
			WHEN d.lease_token <> l.token THEN 'lost'
			WHEN d.lease_expires_at IS DISTINCT FROM ` + followsOwner + ` OR l.settled > d.cursor THEN 'follow'
			ELSE 'keep'
		END AS action
	FROM unnest($3::text[], $4::bigint[], $5::bigint[]) AS l(domain, token, settled)
	JOIN {s}.domains d ON d.domain = l.domain
	WHERE d.owner = $1`

// keepSQL renews owner $1's leases for $2 microseconds: the whole list
// when full (as renewSQL does, leases following the owner but missing from
// it get their own expiry again), else the listed ones on top of every
// lease that follows the owner. It returns one row: the mark, the owner's
// live_until, and the domains, tokens and revisions of the listed leases
// still held.
func keepSQL(full bool) string {
	j := keepListedSQL
	if full {
		j = renewScanSQL
	}
	return `WITH o AS (` + heartbeatSQL + `
), m AS (` + markSQL + `
), j AS (` + j + `
), lk AS (` + renewLockSQL + `
), ch AS (` + renewChangeSQL + `
), kept AS (
	SELECT j.domain, j.lease_token, j.revision FROM j WHERE j.action IN ('keep', 'follow')
)
SELECT m.mark, o.live_until,
	coalesce((SELECT array_agg(kept.domain) FROM kept), '{}'),
	coalesce((SELECT array_agg(kept.lease_token) FROM kept), '{}'),
	coalesce((SELECT array_agg(kept.revision) FROM kept), '{}')
FROM o, m`
}

// KeepLeases implements store.LeaseKeeper in one statement.
func (s *Store) KeepLeases(ctx context.Context, owner string, keep store.LeaseKeep, ttl time.Duration) (store.LeaseKept, error) {
	const op = "keep leases"
	if err := checkCtx(ctx, op); err != nil {
		return store.LeaseKept{}, err
	}
	if err := store.CheckLease(owner, ttl); err != nil {
		return store.LeaseKept{}, refused(op, err)
	}
	domains, tokens := splitLeases(keep.Leases)
	settled := make([]int64, len(keep.Leases))
	for i, l := range keep.Leases {
		settled[i] = l.SettledThrough
	}
	sql := s.sql.keepListed
	if keep.Full {
		sql = s.sql.keepFull
	}
	var (
		out              store.LeaseKept
		until            pgtype.Timestamptz
		names            []string
		heldTokens, revs []int64
	)
	s.count(1)
	err := s.pool.QueryRow(ctx, sql, owner, ttl.Microseconds(), domains, tokens, settled).
		Scan(&out.Mark, &until, &names, &heldTokens, &revs)
	if err != nil {
		return store.LeaseKept{}, s.fail(ctx, op, err)
	}
	out.Changed = !keep.Full && out.Mark != keep.Since
	expires := fromTS(until)
	out.Leases = make([]store.Lease, len(names))
	for i, d := range names {
		out.Leases[i] = store.Lease{Domain: d, Token: heldTokens[i], ExpiresAt: expires, Revision: revs[i]}
	}
	return out, nil
}

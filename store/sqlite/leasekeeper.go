package sqlite

import (
	"context"
	"time"

	"github.com/apqueue/apqueue/store"
)

var _ store.LeaseKeeper = (*Store)(nil)

// KeepLeases renews an owner's leases in one write transaction whose cost
// does not grow with the number of leases it holds. Leases given to it
// follow their owner (see followsOwner), so the owner's row keeps them all
// alive: a call without Full writes that row, reads the owner's change
// mark (apqueue_owner_marks, moved by triggers: see migration 0004) and
// writes only the domain rows listed (leases new since the last call,
// cursors that rose). An idle process holding 20,000 domains then writes
// one row per renewal instead of 20,000. A Full call first gives every
// lease of the owner that follows it its own expiry again, then makes the
// listed ones follow, so a lease left out ends at most ttl later.
// RenewLeases is a Full call.

// keepHeartbeatSQL is heartbeatSQL returning the owner's live_until.
const keepHeartbeatSQL = heartbeatSQL + ` RETURNING live_until`

// markSQL is owner ?'s change mark, 0 when nothing ever moved it.
const markSQL = `SELECT coalesce((SELECT mark FROM apqueue_owner_marks WHERE owner = ?), 0)`

// followSQL makes the leases of its VALUES rows (domain, token,
// settled-through ID) that owner ? still holds follow it, raises each
// one's cursor to its settled-through ID (never lowers it), and returns
// them.
func followSQL(rows int) string {
	return `WITH l(domain, token, settled) AS (VALUES ` + values(rows, 3) + `)
UPDATE apqueue_domains AS d SET lease_expires_at = ` + followsOwner + `, cursor = max(d.cursor, l.settled)
FROM l WHERE d.domain = l.domain AND d.owner = ? AND d.lease_token = l.token
RETURNING domain, lease_token, revision`
}

// KeepLeases implements store.LeaseKeeper in one write transaction.
func (s *Store) KeepLeases(ctx context.Context, owner string, keep store.LeaseKeep, ttl time.Duration) (store.LeaseKept, error) {
	const op = "keep leases"
	if err := checkCtx(ctx, op); err != nil {
		return store.LeaseKept{}, err
	}
	if err := store.CheckLease(owner, ttl); err != nil {
		return store.LeaseKept{}, refused(op, err)
	}
	var out store.LeaseKept
	err := s.write(ctx, func(q querier) (err error) {
		out = store.LeaseKept{}
		s.count(1)
		if err := q.QueryRowContext(ctx, markSQL, owner).Scan(&out.Mark); err != nil {
			return err
		}
		out.Leases, err = s.keepIn(ctx, q, owner, keep.Full, keep.Leases, ttl)
		return err
	})
	if err != nil {
		return store.LeaseKept{}, s.fail(ctx, op, err)
	}
	out.Changed = !keep.Full && out.Mark != keep.Since
	return out, nil
}

// keepIn renews, in the write transaction q, the leases that follow owner
// and those listed, makes the listed ones it still holds follow it (raising
// their cursors to their SettledThrough) and returns them. When full, the
// list is the owner's whole list: a lease that followed the owner and is
// left out gets its own expiry, ttl from now.
func (s *Store) keepIn(ctx context.Context, q querier, owner string, full bool, leases []store.Lease, ttl time.Duration) ([]store.Lease, error) {
	at := now()
	var until int64
	s.count(1)
	if err := q.QueryRowContext(ctx, keepHeartbeatSQL, owner, at+ttl.Microseconds()).Scan(&until); err != nil {
		return nil, err
	}
	if full {
		s.count(1)
		if _, err := q.ExecContext(ctx, unfollowSQL, at+ttl.Microseconds(), owner); err != nil {
			return nil, err
		}
	}
	expires := time.UnixMicro(until).UTC()
	out := make([]store.Lease, 0, len(leases))
	err := chunks(len(leases), 3, func(from, to int) error {
		args := make([]any, 0, 3*(to-from)+1)
		for _, l := range leases[from:to] {
			args = append(args, l.Domain, l.Token, l.SettledThrough)
		}
		args = append(args, owner)
		s.count(1)
		rows, err := q.QueryContext(ctx, followSQL(to-from), args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			l := store.Lease{ExpiresAt: expires}
			if err := rows.Scan(&l.Domain, &l.Token, &l.Revision); err != nil {
				return err
			}
			out = append(out, l)
		}
		return rows.Err()
	})
	return out, err
}

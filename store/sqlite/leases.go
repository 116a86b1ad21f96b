package sqlite

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/apqueue/apqueue/store"
)

// Leases are columns of the domain rows: owner, lease_token (the fencing
// token, incremented by every acquisition) and lease_expires_at, in
// microseconds of the clock of the machine that every process sharing the
// file runs on. No lock outlives a statement: a lease survives its holder's
// connection, and every save (Checkpoint) is fenced on owner and token, so
// a process that lost a lease cannot overwrite its successor's progress.
// SQLite's single writer makes each of the statements below atomic across
// processes, so acquirers need no SKIP LOCKED to split the free domains.

// A lease that follows its owner (see KeepLeases) has lease_expires_at set
// to followsOwner, and lives as long as its owner's row in apqueue_owners
// (live_until) does: an idle process renews all its leases by writing that
// one row. AcquireLeases gives a lease its own expiry; the first renewal
// that lists it (KeepLeases or RenewLeases) makes it follow its owner; a
// lease of the owner that a renewal of its whole list leaves out gets its
// own expiry again.
const followsOwner = `9223372036854775807`

// leaseExpirySQL is a domain row's effective lease expiry: its own, or
// its owner's live_until when the lease follows its owner (NULL when the
// owner is gone).
const leaseExpirySQL = `CASE WHEN apqueue_domains.lease_expires_at = ` + followsOwner + ` THEN (
		SELECT eo.live_until FROM apqueue_owners eo WHERE eo.owner = apqueue_domains.owner)
		ELSE apqueue_domains.lease_expires_at END`

// heartbeatSQL marks owner ? live until ?.
const heartbeatSQL = `INSERT INTO apqueue_owners (owner, live_until) VALUES (?, ?)
	ON CONFLICT (owner) DO UPDATE SET live_until = max(live_until, excluded.live_until)`

// acquireSQL leases up to ?4 free domains (at time ?3), lowest cursor
// first, to owner ?1 until ?2: never leased, released, expired, or
// following an owner that is no longer live.
const acquireSQL = `UPDATE apqueue_domains
SET owner = ?1, lease_token = lease_token + 1, lease_expires_at = ?2
WHERE domain IN (
	SELECT domain FROM apqueue_domains
	WHERE owner = '' OR lease_expires_at IS NULL OR lease_expires_at <= ?3
		OR (lease_expires_at = ` + followsOwner + ` AND owner NOT IN (
			SELECT lo.owner FROM apqueue_owners lo WHERE lo.live_until > ?3))
	ORDER BY cursor, domain
	LIMIT ?4)
RETURNING ` + domainColumns

// releaseSQL ends the leases of its VALUES rows (domain, token) that owner
// ? still holds. The token is kept, so the next acquisition still
// increments it.
func releaseSQL(rows int) string {
	return `WITH l(domain, token) AS (VALUES ` + values(rows, 2) + `)
UPDATE apqueue_domains AS d SET owner = '', lease_expires_at = NULL
FROM l WHERE d.domain = l.domain AND d.owner = ? AND d.lease_token = l.token`
}

// leaseStatsSQL counts the domains and the live owners at time ?: those
// holding a lease of its own expiry, and those whose row is live (which
// keeps the leases that follow them).
const leaseStatsSQL = `SELECT
	(SELECT count(*) FROM apqueue_domains),
	(SELECT count(*) FROM (
		SELECT owner FROM apqueue_domains WHERE owner <> '' AND lease_expires_at > ?1
			AND lease_expires_at <> ` + followsOwner + `
		UNION
		SELECT owner FROM apqueue_owners WHERE live_until > ?1))`

// unfollowSQL gives every lease of owner ?2 that follows it its own
// expiry, ?1.
const unfollowSQL = `UPDATE apqueue_domains SET lease_expires_at = ?1
WHERE owner = ?2 AND lease_expires_at = ` + followsOwner

// AcquireLeases implements store.Store in one write transaction.
func (s *Store) AcquireLeases(ctx context.Context, owner string, ttl time.Duration, limit int) ([]store.DomainState, error) {
	const op = "acquire leases"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if err := store.CheckLease(owner, ttl); err != nil {
		return nil, refused(op, err)
	}
	if err := store.CheckLimit(limit); err != nil {
		return nil, refused(op, err)
	}
	var out []store.DomainState
	err := s.write(ctx, func(q querier) error {
		at := now()
		until := at + ttl.Microseconds()
		s.count(2)
		if _, err := q.ExecContext(ctx, heartbeatSQL, owner, until); err != nil {
			return err
		}
		rows, err := q.QueryContext(ctx, acquireSQL, owner, until, at, limit)
		if err != nil {
			return err
		}
		out, err = collectDomains(rows)
		return err
	})
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	slices.SortFunc(out, func(a, b store.DomainState) int {
		if a.Cursor != b.Cursor {
			return int(a.Cursor - b.Cursor)
		}
		return strings.Compare(a.Domain, b.Domain)
	})
	return out, nil
}

// RenewLeases implements store.Store in one write transaction: what
// KeepLeases does with the whole list (see keepIn), which also raises the
// renewed domains' cursors to their leases' SettledThrough. The renewed
// leases follow their owner from then on.
func (s *Store) RenewLeases(ctx context.Context, owner string, leases []store.Lease, ttl time.Duration) ([]store.Lease, error) {
	const op = "renew leases"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if err := store.CheckLease(owner, ttl); err != nil {
		return nil, refused(op, err)
	}
	var out []store.Lease
	err := s.write(ctx, func(q querier) (err error) {
		out, err = s.keepIn(ctx, q, owner, true, leases, ttl)
		return err
	})
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// ReleaseLeases implements store.Store in one write transaction: it ends
// the leases owner still holds among the given ones, and its liveness when
// it holds no other.
func (s *Store) ReleaseLeases(ctx context.Context, owner string, leases []store.Lease) error {
	const op = "release leases"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := store.CheckOwner(owner); err != nil {
		return refused(op, err)
	}
	err := s.write(ctx, func(q querier) error {
		err := chunks(len(leases), 2, func(from, to int) error {
			s.count(1)
			_, err := q.ExecContext(ctx, releaseSQL(to-from), append(leaseArgs(leases[from:to]), owner)...)
			return err
		})
		if err != nil {
			return err
		}
		// An owner shedding part of its domains stays live; one that gave
		// back its last lease is leaving.
		s.count(1)
		_, err = q.ExecContext(ctx, `DELETE FROM apqueue_owners WHERE owner = ? AND NOT EXISTS (
			SELECT 1 FROM apqueue_domains WHERE owner = ? AND lease_expires_at > ?)`, owner, owner, now())
		return err
	})
	if err != nil {
		return s.fail(ctx, op, err)
	}
	return nil
}

// LeaseStats implements store.Store.
func (s *Store) LeaseStats(ctx context.Context) (store.LeaseStats, error) {
	const op = "lease stats"
	if err := checkCtx(ctx, op); err != nil {
		return store.LeaseStats{}, err
	}
	var st store.LeaseStats
	at := now()
	stmt, err := s.prepared(ctx, leaseStatsSQL)
	if err != nil {
		return store.LeaseStats{}, s.fail(ctx, op, err)
	}
	s.count(1)
	if err := stmt.QueryRowContext(ctx, at).Scan(&st.Domains, &st.Owners); err != nil {
		return store.LeaseStats{}, s.fail(ctx, op, err)
	}
	return st, nil
}

// leaseArgs returns the (domain, token) parameters of leases, with room for
// two more.
func leaseArgs(leases []store.Lease) []any {
	args := make([]any, 0, 2*len(leases)+2)
	for _, l := range leases {
		args = append(args, l.Domain, l.Token)
	}
	return args
}

package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/apqueue/apqueue/store"
)

// Leases are columns of the domain rows: owner, lease_token (the fencing
// token, incremented by every acquisition) and lease_expires_at, always
// computed with the database's clock (now()), so that processes with skewed
// clocks agree. No session state or advisory lock is involved: a lease
// survives its holder's connection and works through pgBouncer. Every save
// (Checkpoint) is fenced on owner and token, so a process that lost a lease
// cannot overwrite its successor's progress.
//
// A renewal costs one row, not one per domain. AcquireLeases gives a domain
// a lease with its own expiry (now() + ttl). The first RenewLeases of that
// lease turns it into one that follows its owner: lease_expires_at becomes
// 'infinity' and the lease lives as long as the owner's row in owners does
// (live_until). From then on a renewal writes only the owner's row, and the
// domain rows whose cursor it raises (SettledThrough); an idle process
// holding 20,000 domains writes one row per renewal instead of 20,000. A
// renewal is the owner's whole list: a lease of the owner that follows it but
// is not in the list gets its own expiry again (now() + ttl), so a lease its
// owner stopped renewing still ends, as it did when every lease had its own
// expiry. Such a lease counts as live only while its owner is
// (heldSQL); DomainState.LeaseExpiresAt reads the owner's live_until for it
// (leaseExpirySQL).
//
// KeepLeases (leasekeeper.go) goes further: a renewal that lists only the
// leases new since the last one and the cursors that rose, with the owner's
// change mark telling it when to look at its whole list again. An idle
// process then neither reads nor sends one row per domain.
//
// Processes of schema version 6 and before (a rolling upgrade) see an
// 'infinity' lease as held for ever: they never take over a domain from an
// upgraded process, which the upgraded processes still do when it dies.

// heartbeatSQL marks owner $1 live for $2 microseconds and returns until
// when.
const heartbeatSQL = `INSERT INTO {s}.owners (owner, live_until)
	VALUES ($1, now() + $2::bigint * interval '1 microsecond')
	ON CONFLICT (owner) DO UPDATE SET live_until = greatest({s}.owners.live_until, EXCLUDED.live_until)
	RETURNING live_until`

// followsOwner is the lease_expires_at of a lease that lives as long as its
// owner.
const followsOwner = `'infinity'::timestamptz`

// freeSQL is true for a domain row d that nobody holds: never leased,
// released, expired, or following an owner that is no longer live.
const freeSQL = `(d.owner = '' OR d.lease_expires_at IS NULL OR d.lease_expires_at <= now()
		OR (d.lease_expires_at = ` + followsOwner + ` AND d.owner NOT IN (
			SELECT lo.owner FROM {s}.owners lo WHERE lo.live_until > now())))`

// leaseExpirySQL is a domain row's effective lease expiry, for the row of
// table (or alias) t: its own, or its owner's live_until when the lease
// follows its owner (NULL when the owner is gone).
func leaseExpirySQL(t string) string {
	return `CASE WHEN ` + t + `.lease_expires_at = ` + followsOwner + ` THEN (
		SELECT eo.live_until FROM {s}.owners eo WHERE eo.owner = ` + t + `.owner)
		ELSE ` + t + `.lease_expires_at END`
}

// acquireSQL leases up to $3 free domains, lowest cursor first, to owner $1
// for $2 microseconds. SKIP LOCKED lets concurrent acquirers split the free
// domains instead of queueing behind each other.
const acquireSQL = `WITH o AS (` + heartbeatSQL + `
), free AS (
	SELECT d.domain FROM {s}.domains d
	WHERE ` + freeSQL + `
	ORDER BY d.cursor, d.domain COLLATE "C"
	LIMIT $3
	FOR UPDATE OF d SKIP LOCKED
)
UPDATE {s}.domains d
SET owner = $1, lease_token = d.lease_token + 1, lease_expires_at = now() + $2::bigint * interval '1 microsecond'
FROM free, o WHERE d.domain = free.domain
RETURNING d.domain, d.shared_inbox, d.cursor, d.status, d.fail_count, d.failing_since, d.next_attempt_at,
	d.last_status, d.last_error, d.last_success_at, d.owner, d.lease_token, d.lease_expires_at, d.revision, d.progress,
	d.signature_scheme, d.signature_checked_at`

// renewSQL renews the leases ($3 domains, $4 tokens) owner $1 still holds
// and raises each renewed domain's cursor to its settled-through ID ($5),
// writing only the owner's row and the domain rows that change: a lease not
// yet following its owner starts to, a cursor rises, or a lease following
// the owner is missing from the list and gets its own expiry again. It
// returns the renewed leases with the owner's live_until.
//
// One scan of the owner's domain rows, joined with the list through a hash
// (j), finds all of that, so the statement stays linear in the number of
// domains under any plan and costs about one read of each row when nothing
// changes. The rows it changes are locked first, in domain order (lk), as
// every statement that waits for domain row locks does (see checkpointSQL),
// so that none deadlock; they are few, and updated through the primary key.
var renewSQL = `WITH o AS (` + heartbeatSQL + `
), j AS (` + renewScanSQL + `
), lk AS (` + renewLockSQL + `
), ch AS (` + renewChangeSQL + `
)
SELECT j.domain, j.lease_token, o.live_until, j.revision
FROM j, o WHERE j.action IN ('keep', 'follow')`

// renewScanSQL is renewSQL's j: the owner $1's domain rows joined with
// the list ($3 domains, $4 tokens, $5 settled-through IDs), with what each
// needs.
const renewScanSQL = `SELECT d.domain, d.lease_token, d.revision, l.token, l.settled,
		CASE
			WHEN l.domain IS NULL THEN 'expire'
			WHEN d.lease_token <> l.token THEN 'lost'
			WHEN d.lease_expires_at IS DISTINCT FROM ` + followsOwner + ` OR l.settled > d.cursor THEN 'follow'
			ELSE 'keep'
		END AS action
	FROM {s}.domains d
	LEFT JOIN unnest($3::text[], $4::bigint[], $5::bigint[]) AS l(domain, token, settled) ON l.domain = d.domain
	WHERE d.owner = $1 AND (l.domain IS NOT NULL OR d.lease_expires_at = ` + followsOwner + `)`

// renewLockSQL is the lk of the renewals: it locks, in domain order, the
// rows of j that change.
const renewLockSQL = `SELECT d.domain, j.action, j.settled FROM j JOIN {s}.domains d ON d.domain = j.domain
	WHERE j.action IN ('follow', 'expire') AND d.owner = $1
	ORDER BY d.domain COLLATE "C"
	FOR UPDATE OF d`

// renewChangeSQL is the ch of the renewals: it makes the leases of lk
// follow their owner (raising their cursors) or gives them their own
// expiry ($2 microseconds from now).
const renewChangeSQL = `UPDATE {s}.domains d SET
		lease_expires_at = CASE WHEN lk.action = 'follow' THEN ` + followsOwner + `
			ELSE now() + $2::bigint * interval '1 microsecond' END,
		cursor = CASE WHEN lk.action = 'follow' THEN greatest(d.cursor, lk.settled) ELSE d.cursor END
	FROM lk WHERE d.domain = lk.domain AND d.owner = $1`

// releaseSQL ends the leases ($2 domains, $3 tokens) owner $1 still holds,
// and the owner's liveness when it holds no other lease. The token is kept,
// so the next acquisition still increments it. The rows are locked first, in
// domain order (see renewSQL).
var releaseSQL = `WITH lk AS (
	SELECT d.domain FROM unnest($2::text[], $3::bigint[]) AS l(domain, token)
	JOIN {s}.domains d ON d.domain = l.domain
	WHERE d.owner = $1 AND d.lease_token = l.token
	ORDER BY d.domain COLLATE "C"
	FOR UPDATE OF d
), rel AS (
	UPDATE {s}.domains d SET owner = '', lease_expires_at = NULL
	FROM lk WHERE d.domain = lk.domain AND d.owner = $1
)
DELETE FROM {s}.owners WHERE owner = $1 AND NOT EXISTS (
	SELECT 1 FROM {s}.domains d
	WHERE d.owner = $1 AND d.lease_expires_at > now()
		AND d.domain NOT IN (SELECT lk.domain FROM lk))`

// leaseStatsSQL counts the domains and the live owners: those with a row in
// owners live now, and those holding a lease with its own expiry (a process
// of an earlier schema version may hold one without a live row).
var leaseStatsSQL = `SELECT
	(SELECT count(*) FROM {s}.domains),
	(SELECT count(*) FROM (
		SELECT owner FROM {s}.domains
		WHERE owner <> '' AND lease_expires_at > now() AND lease_expires_at <> ` + followsOwner + `
		UNION
		SELECT owner FROM {s}.owners WHERE live_until > now()) AS live)`

// AcquireLeases implements store.Store in one statement.
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
	s.count(1)
	rows, err := s.pool.Query(ctx, s.sql.acquire, owner, ttl.Microseconds(), limit)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	out, err := pgx.CollectRows(rows, scanDomain)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// RenewLeases implements store.Store in one statement.
func (s *Store) RenewLeases(ctx context.Context, owner string, leases []store.Lease, ttl time.Duration) ([]store.Lease, error) {
	const op = "renew leases"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if err := store.CheckLease(owner, ttl); err != nil {
		return nil, refused(op, err)
	}
	domains, tokens := splitLeases(leases)
	settled := make([]int64, len(leases))
	for i, l := range leases {
		settled[i] = l.SettledThrough
	}
	s.count(1)
	rows, err := s.pool.Query(ctx, s.sql.renew, owner, ttl.Microseconds(), domains, tokens, settled)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Lease, error) {
		var (
			l  store.Lease
			ts pgtype.Timestamptz
		)
		err := row.Scan(&l.Domain, &l.Token, &ts, &l.Revision)
		l.ExpiresAt = fromTS(ts)
		return l, err
	})
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// ReleaseLeases implements store.Store in one statement.
func (s *Store) ReleaseLeases(ctx context.Context, owner string, leases []store.Lease) error {
	const op = "release leases"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := store.CheckOwner(owner); err != nil {
		return refused(op, err)
	}
	domains, tokens := splitLeases(leases)
	s.count(1)
	if _, err := s.pool.Exec(ctx, s.sql.release, owner, domains, tokens); err != nil {
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
	s.count(1)
	if err := s.pool.QueryRow(ctx, s.sql.leaseStats).Scan(&st.Domains, &st.Owners); err != nil {
		return store.LeaseStats{}, s.fail(ctx, op, err)
	}
	return st, nil
}

func splitLeases(leases []store.Lease) ([]string, []int64) {
	domains := make([]string, len(leases))
	tokens := make([]int64, len(leases))
	for i, l := range leases {
		domains[i] = l.Domain
		tokens[i] = l.Token
	}
	return domains, tokens
}

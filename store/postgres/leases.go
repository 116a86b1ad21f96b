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

// heartbeatSQL marks owner $1 live for $2 microseconds.
const heartbeatSQL = `INSERT INTO {s}.owners (owner, live_until)
	VALUES ($1, now() + $2::bigint * interval '1 microsecond')
	ON CONFLICT (owner) DO UPDATE SET live_until = greatest({s}.owners.live_until, EXCLUDED.live_until)`

// acquireSQL leases up to $3 free domains, lowest cursor first, to owner $1
// for $2 microseconds. SKIP LOCKED lets concurrent acquirers split the free
// domains instead of queueing behind each other.
const acquireSQL = `WITH o AS (` + heartbeatSQL + `
), free AS (
	SELECT domain FROM {s}.domains
	WHERE owner = '' OR lease_expires_at IS NULL OR lease_expires_at <= now()
	ORDER BY cursor, domain COLLATE "C"
	LIMIT $3
	FOR UPDATE SKIP LOCKED
)
UPDATE {s}.domains d
SET owner = $1, lease_token = d.lease_token + 1, lease_expires_at = now() + $2::bigint * interval '1 microsecond'
FROM free WHERE d.domain = free.domain
RETURNING d.domain, d.shared_inbox, d.cursor, d.status, d.fail_count, d.failing_since, d.next_attempt_at,
	d.last_status, d.last_error, d.last_success_at, d.owner, d.lease_token, d.lease_expires_at, d.revision, d.progress,
	d.signature_scheme, d.signature_checked_at`

// lockOwnedSQL locks, in domain order, the rows of the domains in
// parameter domains that owner $1 holds, before renewSQL and releaseSQL
// change them: every statement that waits for domain row locks takes them
// in that order, so none deadlock (see checkpointSQL). It yields one row
// (the count), so that the statements that join it to force the locks
// first stay linear in the number of domains whatever plan PostgreSQL
// picks; a join with the locked rows themselves is quadratic under a
// generic plan that expects 10 rows.
func lockOwnedSQL(domains string) string {
	return `SELECT count(*) AS n FROM (
		SELECT d.domain FROM {s}.domains d
		WHERE d.domain = ANY(` + domains + `::text[]) AND d.owner = $1
		ORDER BY d.domain COLLATE "C"
		FOR UPDATE OF d) AS locked`
}

// renewSQL extends the leases ($3 domains, $4 tokens) owner $1 still holds
// and raises each renewed domain's cursor to its settled-through ID ($5).
var renewSQL = `WITH o AS (` + heartbeatSQL + `
), lk AS (` + lockOwnedSQL("$3") + `
)
UPDATE {s}.domains d SET lease_expires_at = now() + $2::bigint * interval '1 microsecond',
	cursor = greatest(d.cursor, l.settled)
FROM unnest($3::text[], $4::bigint[], $5::bigint[]) AS l(domain, token, settled), lk
WHERE d.domain = l.domain AND d.owner = $1 AND d.lease_token = l.token
RETURNING d.domain, d.lease_token, d.lease_expires_at, d.revision`

// releaseSQL ends owner $1's liveness and the leases ($2 domains, $3
// tokens) it still holds. The token is kept, so the next acquisition still
// increments it.
var releaseSQL = `WITH o AS (
	DELETE FROM {s}.owners WHERE owner = $1
), lk AS (` + lockOwnedSQL("$2") + `
)
UPDATE {s}.domains d SET owner = '', lease_expires_at = NULL
FROM unnest($2::text[], $3::bigint[]) AS l(domain, token), lk
WHERE d.domain = l.domain AND d.owner = $1 AND d.lease_token = l.token`

const leaseStatsSQL = `SELECT
	(SELECT count(*) FROM {s}.domains),
	(SELECT count(*) FROM (
		SELECT owner FROM {s}.domains WHERE owner <> '' AND lease_expires_at > now()
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

package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/apqueue/apqueue/store"
)

// registerSQL adds unknown domains at the safe head and sets the shared
// inboxes that are given. Domains are inserted in the given (sorted) order,
// so concurrent registrations lock them in one order.
const registerSQL = `INSERT INTO {s}.domains (domain, shared_inbox, cursor)
SELECT u.domain, u.shared_inbox, {safe_head}
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(domain, shared_inbox, ord)
ORDER BY u.ord
ON CONFLICT (domain) DO UPDATE SET shared_inbox = EXCLUDED.shared_inbox, revision = {s}.domains.revision + 1
	WHERE EXCLUDED.shared_inbox <> '' AND {s}.domains.shared_inbox IS DISTINCT FROM EXCLUDED.shared_inbox`

// domainColumns are the columns scanDomain reads, from a query on the
// domains table without an alias. A lease that follows its owner (see
// leases.go) reads as expiring with it.
var domainColumns = `domain, shared_inbox, cursor, status, fail_count, failing_since, next_attempt_at,
	last_status, last_error, last_success_at, owner, lease_token,
	` + leaseExpirySQL("{s}.domains") + ` AS lease_expires_at, revision, progress,
	signature_scheme, signature_checked_at`

// domainsSQL reads every domain when $1 is empty, else the named ones
// through the primary key: a join with the names rather than a filter, so
// that reading 20,000 named domains stays linear under a generic plan.
var domainsSQL = `SELECT * FROM (
	SELECT ` + domainColumns + ` FROM {s}.domains
	WHERE cardinality($1::text[]) = 0
	UNION ALL
	SELECT ` + domainColumns + ` FROM {s}.domains
	WHERE domain IN (SELECT DISTINCT name FROM unnest($1::text[]) AS n(name))
) AS d ORDER BY domain COLLATE "C"`

// checkpointSQL saves every state whose owner still holds the lease with
// its token and that is based on the domain's current revision, and the
// dead letters of every domain not refused, in one statement. A saved
// cursor never moves a cursor backwards. It returns the saved domains
// (saved true), then every given domain with whether its lease held as the
// statement began (saved false), so the caller tells lost leases from
// stale states.
//
// It locks the rows it may change first, in domain order (lk), as every
// statement that waits for domain row locks does, so that concurrent
// checkpoints, renewals and releases of overlapping domains (the queue lists
// them in map order) cannot deadlock. Every join is between the given
// arrays and the domains table's primary key, never between two sets
// without an index, so the statement stays linear in the number of domains
// under any plan, including the generic plan PostgreSQL switches to for a
// prepared statement (planned for 10 array elements).
const checkpointSQL = `WITH st AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::integer[],
		$7::timestamptz[], $8::timestamptz[], $9::integer[], $10::text[], $11::timestamptz[], $22::bigint[], $24::text[],
		$25::text[], $26::timestamptz[])
		AS st(domain, owner, token, cursor, status, fail_count, failing_since, next_attempt_at,
			last_status, last_error, last_success_at, revision, progress, signature_scheme, signature_checked_at)
), lk AS (
	SELECT count(*) AS n FROM (
		SELECT d.domain FROM {s}.domains d
		WHERE d.domain = ANY($1::text[])
		ORDER BY d.domain COLLATE "C"
		FOR UPDATE OF d) AS locked
), saved AS (
	UPDATE {s}.domains d SET cursor = greatest(d.cursor, st.cursor), status = st.status, fail_count = st.fail_count,
		failing_since = st.failing_since, next_attempt_at = st.next_attempt_at,
		last_status = st.last_status, last_error = st.last_error, last_success_at = st.last_success_at,
		progress = st.progress::jsonb,
		signature_scheme = st.signature_scheme, signature_checked_at = st.signature_checked_at
	FROM st, lk
	WHERE d.domain = st.domain AND st.owner <> '' AND d.owner = st.owner AND d.lease_token = st.token
		AND d.revision = st.revision
	RETURNING d.domain
), saved_set AS (
	-- The saved domains as one jsonb object: a key lookup is a binary
	-- search, so fencing every dead letter on it stays linear.
	SELECT coalesce(jsonb_object_agg(domain, true), '{}'::jsonb) AS m FROM saved
), dl AS (
	INSERT INTO {s}.dead_letters (activity_id, domain, inbox, actor, ordering_key, body, status, reason, attempts, created_at)
	SELECT x.activity_id, x.domain, x.inbox, x.actor, x.ordering_key, x.body, x.status, x.reason, x.attempts,
		coalesce(x.created_at, date_trunc('microseconds', statement_timestamp()))
	FROM unnest($12::bigint[], $13::text[], $14::text[], $15::text[], $16::text[], $17::bytea[],
		$18::integer[], $19::text[], $20::integer[], $21::timestamptz[], $23::text[])
		WITH ORDINALITY AS x(activity_id, domain, inbox, actor, ordering_key, body, status, reason, attempts, created_at,
			owner, ord)
	CROSS JOIN saved_set
	WHERE (x.owner IS NULL OR saved_set.m ? x.domain)
		AND NOT EXISTS (SELECT 1 FROM {s}.dead_letters e
			WHERE e.activity_id = x.activity_id AND e.domain = x.domain AND e.inbox = x.inbox)
	ORDER BY x.ord
)
SELECT domain, true, true FROM saved
UNION ALL
SELECT st.domain, false, coalesce(st.owner <> '' AND d.owner = st.owner AND d.lease_token = st.token, false)
FROM st LEFT JOIN {s}.domains d ON d.domain = st.domain`

// RegisterDomains implements store.Store.
func (s *Store) RegisterDomains(ctx context.Context, domains []store.DomainRegistration) error {
	const op = "register domains"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := store.CheckRegistrations(domains); err != nil {
		return refused(op, err)
	}
	regs := store.MergeRegistrations(domains)
	if len(regs) == 0 {
		return nil
	}
	names := make([]string, len(regs))
	shared := make([]string, len(regs))
	for i, r := range regs {
		names[i], shared[i] = r.Domain, r.SharedInbox
	}
	s.count(1)
	if _, err := s.pool.Exec(ctx, s.sql.register, names, shared); err != nil {
		return s.fail(ctx, op, err)
	}
	return nil
}

// Domains implements store.Store.
func (s *Store) Domains(ctx context.Context, names []string) ([]store.DomainState, error) {
	const op = "read domains"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if names == nil {
		names = []string{}
	}
	s.count(1)
	rows, err := s.pool.Query(ctx, s.sql.domains, names)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	out, err := pgx.CollectRows(rows, scanDomain)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// scanDomain reads a row of domainColumns.
func scanDomain(row pgx.CollectableRow) (store.DomainState, error) {
	var (
		d                                          store.DomainState
		status                                     string
		failingSince, nextAttempt, lastOK, expires pgtype.Timestamptz
		checked                                    pgtype.Timestamptz
	)
	err := row.Scan(&d.Domain, &d.SharedInbox, &d.Cursor, &status, &d.FailCount, &failingSince, &nextAttempt,
		&d.LastStatus, &d.LastError, &lastOK, &d.Owner, &d.LeaseToken, &expires, &d.Revision, &d.Progress,
		&d.SignatureScheme, &checked)
	d.SignatureCheckedAt = fromTS(checked)
	d.Status = store.DomainStatus(status)
	d.FailingSince = fromTS(failingSince)
	d.NextAttemptAt = fromTS(nextAttempt)
	d.LastSuccessAt = fromTS(lastOK)
	d.LeaseExpiresAt = fromTS(expires)
	return d, err
}

// Checkpoint implements store.Store in one statement: see checkpointSQL.
// When a domain appears more than once in states, the last state wins.
func (s *Store) Checkpoint(ctx context.Context, states []store.DomainState, deadLetters []store.DeadLetter) error {
	const op = "checkpoint"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := store.CheckCheckpoint(states, deadLetters); err != nil {
		return refused(op, err)
	}
	if len(states) == 0 && len(deadLetters) == 0 {
		return nil
	}

	last := make(map[string]int, len(states))
	for i, st := range states {
		last[st.Domain] = i
	}
	var (
		domains, owners, statuses, lastErrors     []string
		progress                                  []*string
		tokens, cursors, revisions                []int64
		failCounts, lastStatuses                  []int32
		failingSince, nextAttempt, lastSuccessAts []pgtype.Timestamptz
		schemes                                   []string
		schemeChecked                             []pgtype.Timestamptz
	)
	for i, st := range states {
		if last[st.Domain] != i {
			continue
		}
		domains = append(domains, st.Domain)
		owners = append(owners, st.Owner)
		tokens = append(tokens, st.LeaseToken)
		cursors = append(cursors, st.Cursor)
		statuses = append(statuses, string(st.Status))
		failCounts = append(failCounts, int32(st.FailCount))
		failingSince = append(failingSince, toTS(st.FailingSince))
		nextAttempt = append(nextAttempt, toTS(st.NextAttemptAt))
		lastStatuses = append(lastStatuses, int32(st.LastStatus))
		lastErrors = append(lastErrors, st.LastError)
		lastSuccessAts = append(lastSuccessAts, toTS(st.LastSuccessAt))
		revisions = append(revisions, st.Revision)
		var p *string
		if st.Progress != nil {
			b, err := json.Marshal(st.Progress)
			if err != nil {
				return invalid(op, "progress of %s: %v", st.Domain, err)
			}
			js := string(b)
			p = &js
		}
		progress = append(progress, p)
		schemes = append(schemes, st.SignatureScheme)
		schemeChecked = append(schemeChecked, toTS(st.SignatureCheckedAt))
	}
	var (
		dlActivity                                  []int64
		dlDomain, dlInbox, dlActor, dlKey, dlReason []string
		dlOwner                                     []*string
		dlBody                                      [][]byte
		dlStatus, dlAttempts                        []int32
		dlCreated                                   []pgtype.Timestamptz
	)
	type delivery struct {
		activity      int64
		domain, inbox string
	}
	seen := make(map[delivery]bool, len(deadLetters))
	for _, dl := range deadLetters {
		if k := (delivery{dl.ActivityID, dl.Domain, dl.Inbox}); seen[k] {
			continue // recorded once, here as in the table (checkpointSQL)
		} else {
			seen[k] = true
		}
		// A dead letter is saved if and only if its domain's state is
		// (checkpointSQL); one of a domain without a state in this call
		// (owner NULL) is saved as it is.
		var owner *string
		if i, ok := last[dl.Domain]; ok {
			owner = &states[i].Owner
		}
		dlOwner = append(dlOwner, owner)
		dlActivity = append(dlActivity, dl.ActivityID)
		dlDomain = append(dlDomain, dl.Domain)
		dlInbox = append(dlInbox, dl.Inbox)
		dlActor = append(dlActor, dl.Actor)
		dlKey = append(dlKey, dl.OrderingKey)
		body := dl.Body
		if body == nil {
			body = []byte{}
		}
		dlBody = append(dlBody, body)
		dlStatus = append(dlStatus, int32(dl.Status))
		dlReason = append(dlReason, dl.Reason)
		dlAttempts = append(dlAttempts, int32(dl.Attempts))
		dlCreated = append(dlCreated, toTS(dl.CreatedAt))
	}

	s.count(1)
	rows, err := s.pool.Query(ctx, s.sql.checkpoint,
		nonNil(domains), nonNil(owners), nonNil(tokens), nonNil(cursors), nonNil(statuses), nonNil(failCounts),
		nonNil(failingSince), nonNil(nextAttempt), nonNil(lastStatuses), nonNil(lastErrors), nonNil(lastSuccessAts),
		nonNil(dlActivity), nonNil(dlDomain), nonNil(dlInbox), nonNil(dlActor), nonNil(dlKey), nonNil(dlBody),
		nonNil(dlStatus), nonNil(dlReason), nonNil(dlAttempts), nonNil(dlCreated), nonNil(revisions),
		nonNil(dlOwner), nonNil(progress), nonNil(schemes), nonNil(schemeChecked))
	if err != nil {
		return s.fail(ctx, op, err)
	}
	savedSet := make(map[string]bool, len(domains))
	var refusedStates []string
	leasedOf := make(map[string]bool)
	var domain string
	var saved, leased bool
	_, err = pgx.ForEachRow(rows, []any{&domain, &saved, &leased}, func() error {
		if saved {
			savedSet[domain] = true
		} else {
			refusedStates = append(refusedStates, domain)
			leasedOf[domain] = leased
		}
		return nil
	})
	if err != nil {
		return s.fail(ctx, op, err)
	}
	var lost, stale []string
	for _, d := range refusedStates {
		switch {
		case savedSet[d]:
		case leasedOf[d]:
			stale = append(stale, d)
		default:
			lost = append(lost, d)
		}
	}
	return store.CheckpointRefused(lost, stale)
}

// changeDomainSQL applies an admin change ($2 status or ”, $3 clear
// backoff, $4 skip-to) to domain $1 and bumps its revision.
var changeDomainSQL = `UPDATE {s}.domains SET
	status = CASE WHEN $2::text = '' THEN status ELSE $2::text END,
	fail_count = CASE WHEN $3::boolean THEN 0 ELSE fail_count END,
	failing_since = CASE WHEN $3::boolean THEN NULL ELSE failing_since END,
	next_attempt_at = CASE WHEN $3::boolean THEN NULL ELSE next_attempt_at END,
	last_error = CASE WHEN $3::boolean THEN '' ELSE last_error END,
	progress = CASE WHEN $3::boolean AND progress ? 'deliveries' THEN jsonb_set(progress, '{deliveries}',
		(SELECT coalesce(jsonb_agg(d - 'next_attempt_at' ORDER BY n), '[]'::jsonb)
		 FROM jsonb_array_elements(progress->'deliveries') WITH ORDINALITY AS e(d, n)))
		ELSE progress END,
	cursor = greatest(cursor, $4::bigint),
	revision = revision + 1
WHERE domain = $1
RETURNING ` + domainColumns

// ChangeDomain implements store.Store in one statement.
func (s *Store) ChangeDomain(ctx context.Context, domain string, change store.DomainChange) (store.DomainState, error) {
	const op = "change domain"
	if err := checkCtx(ctx, op); err != nil {
		return store.DomainState{}, err
	}
	if err := store.CheckChange(domain, change); err != nil {
		return store.DomainState{}, refused(op, err)
	}
	s.count(1)
	rows, err := s.pool.Query(ctx, s.sql.changeDomain, domain, string(change.Status), change.ClearBackoff, change.SkipTo)
	if err != nil {
		return store.DomainState{}, s.fail(ctx, op, err)
	}
	states, err := pgx.CollectRows(rows, scanDomain)
	if err != nil {
		return store.DomainState{}, s.fail(ctx, op, err)
	}
	if len(states) == 0 {
		return store.DomainState{}, fmt.Errorf("postgres: %s %q: %w", op, domain, store.ErrNotFound)
	}
	return states[0], nil
}

// nonNil returns l, or an empty slice when l is nil, so that an empty list
// is sent as an empty array rather than NULL.
func nonNil[T any](l []T) []T {
	if l == nil {
		return []T{}
	}
	return l
}

// forgetDomainSQL deletes domain $1's row, with its state and lease.
const forgetDomainSQL = `DELETE FROM {s}.domains WHERE domain = $1`

// ForgetDomain implements store.Store in one statement. The domain's dead
// letters stay. A domain registered again starts its lease tokens above
// every token of its old row (see migration 0008), so an owner that has
// not yet noticed the loss cannot pass the new row's fencing check.
func (s *Store) ForgetDomain(ctx context.Context, domain string) error {
	const op = "forget domain"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := store.CheckForget(domain); err != nil {
		return refused(op, err)
	}
	s.count(1)
	tag, err := s.pool.Exec(ctx, s.sql.forgetDomain, domain)
	if err != nil {
		return s.fail(ctx, op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %s %q: %w", op, domain, store.ErrNotFound)
	}
	return nil
}

package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/apqueue/apqueue/store"
)

// domainColumns are the columns of a domain row as collectDomains reads
// them, the lease's effective expiry among them (see followsOwner).
const domainColumns = `domain, shared_inbox, cursor, status, fail_count, failing_since, next_attempt_at,
	last_status, last_error, last_success_at, owner, lease_token, ` + leaseExpirySQL + `, revision, progress,
	signature_scheme, signature_checked_at`

// registerSQL adds the unknown domains of its VALUES rows (domain, shared
// inbox) at the head and sets the shared inboxes that are given, bumping
// the revision of a domain whose inbox changes. ("WHERE true" tells
// SQLite's parser that ON CONFLICT belongs to the INSERT.)
func registerSQL(rows int) string {
	return `WITH r(domain, shared_inbox) AS (VALUES ` + values(rows, 2) + `)
INSERT INTO apqueue_domains (domain, shared_inbox, cursor)
SELECT r.domain, r.shared_inbox, (SELECT last_id FROM apqueue_id_counter) FROM r WHERE true
ON CONFLICT (domain) DO UPDATE SET shared_inbox = excluded.shared_inbox, revision = revision + 1
	WHERE excluded.shared_inbox <> '' AND shared_inbox <> excluded.shared_inbox`
}

const domainsSQL = `SELECT ` + domainColumns + ` FROM apqueue_domains
WHERE ? = 0 OR domain IN (SELECT value FROM json_each(?))
ORDER BY domain`

// RegisterDomains implements store.Store in one write transaction.
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
	err := s.write(ctx, func(q querier) error {
		return chunks(len(regs), 2, func(from, to int) error {
			args := make([]any, 0, 2*(to-from))
			for _, r := range regs[from:to] {
				args = append(args, r.Domain, r.SharedInbox)
			}
			s.count(1)
			_, err := q.ExecContext(ctx, registerSQL(to-from), args...)
			return err
		})
	})
	if err != nil {
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
	s.count(1)
	rows, err := s.query(ctx, domainsSQL, len(names), jsonList(names))
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	out, err := collectDomains(rows)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// collectDomains reads every row of domainColumns and closes rows.
func collectDomains(rows *sql.Rows) ([]store.DomainState, error) {
	defer rows.Close()
	var out []store.DomainState
	for rows.Next() {
		var (
			d                                          store.DomainState
			status                                     string
			failingSince, nextAttempt, lastOK, expires sql.NullInt64
			checked                                    sql.NullInt64
			progress                                   sql.NullString
		)
		if err := rows.Scan(&d.Domain, &d.SharedInbox, &d.Cursor, &status, &d.FailCount, &failingSince, &nextAttempt,
			&d.LastStatus, &d.LastError, &lastOK, &d.Owner, &d.LeaseToken, &expires, &d.Revision, &progress,
			&d.SignatureScheme, &checked); err != nil {
			return nil, err
		}
		d.SignatureCheckedAt = fromMicros(checked)
		if progress.Valid {
			d.Progress = new(store.Progress)
			if err := json.Unmarshal([]byte(progress.String), d.Progress); err != nil {
				return nil, fmt.Errorf("progress of %s: %w", d.Domain, err)
			}
		}
		d.Status = store.DomainStatus(status)
		d.FailingSince = fromMicros(failingSince)
		d.NextAttemptAt = fromMicros(nextAttempt)
		d.LastSuccessAt = fromMicros(lastOK)
		d.LeaseExpiresAt = fromMicros(expires)
		out = append(out, d)
	}
	return out, rows.Err()
}

// changeDomainSQL applies an admin change (status or ”, clear backoff,
// skip-to) to a domain and bumps its revision.
const changeDomainSQL = `UPDATE apqueue_domains SET
	status = CASE WHEN ? = '' THEN status ELSE ? END,
	fail_count = CASE WHEN ? THEN 0 ELSE fail_count END,
	failing_since = CASE WHEN ? THEN NULL ELSE failing_since END,
	next_attempt_at = CASE WHEN ? THEN NULL ELSE next_attempt_at END,
	last_error = CASE WHEN ? THEN '' ELSE last_error END,
	cursor = max(cursor, ?),
	revision = revision + 1
WHERE domain = ?
RETURNING ` + domainColumns

// ChangeDomain implements store.Store in one statement, in a write
// transaction so that it takes its turn with the Store's other writes.
// ClearBackoff also clears the retry times of the deliveries in the saved
// Progress (a second statement), so that "the next attempt is now" holds
// for an owner that loads the domain afresh (after losing its lease, or a
// restart) as for one that takes the change in while it works the domain.
func (s *Store) ChangeDomain(ctx context.Context, domain string, change store.DomainChange) (store.DomainState, error) {
	const op = "change domain"
	if err := checkCtx(ctx, op); err != nil {
		return store.DomainState{}, err
	}
	if err := store.CheckChange(domain, change); err != nil {
		return store.DomainState{}, refused(op, err)
	}
	status, clear := string(change.Status), change.ClearBackoff
	var states []store.DomainState
	err := s.write(ctx, func(q querier) error {
		s.count(1)
		rows, err := q.QueryContext(ctx, changeDomainSQL, status, status, clear, clear, clear, clear, change.SkipTo, domain)
		if err != nil {
			return err
		}
		states, err = collectDomains(rows)
		if err != nil || !clear || len(states) == 0 || states[0].Progress == nil {
			return err
		}
		// Clearing the backoff clears the retry times of the deliveries in
		// the saved progress too, so that an owner that loads the domain
		// afresh (after losing its lease, or a restart) retries at once.
		p := states[0].Progress
		for i := range p.Deliveries {
			p.Deliveries[i].NextAttemptAt = time.Time{}
		}
		js, err := progressJSON(p)
		if err != nil {
			return err
		}
		s.count(1)
		_, err = q.ExecContext(ctx, `UPDATE apqueue_domains SET progress = ? WHERE domain = ?`, js, domain)
		return err
	})
	if err != nil {
		return store.DomainState{}, s.fail(ctx, op, err)
	}
	if len(states) == 0 {
		return store.DomainState{}, fmt.Errorf("sqlite: %s %q: %w", op, domain, store.ErrNotFound)
	}
	return states[0], nil
}

// forgetTokenSQL keeps the lease token of domain ?, so that a row of the
// domain registered again starts from it (see migration 0003).
const forgetTokenSQL = `INSERT OR REPLACE INTO apqueue_forgotten_domains (domain, lease_token)
SELECT domain, lease_token FROM apqueue_domains WHERE domain = ?`

// ForgetDomain implements store.Store in one write transaction. The
// domain's dead letters stay; its lease token is kept so that tokens do
// not start over if it is registered again.
func (s *Store) ForgetDomain(ctx context.Context, domain string) error {
	const op = "forget domain"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := store.CheckForget(domain); err != nil {
		return refused(op, err)
	}
	var n int64
	err := s.write(ctx, func(q querier) error {
		s.count(2)
		if _, err := q.ExecContext(ctx, forgetTokenSQL, domain); err != nil {
			return err
		}
		r, err := q.ExecContext(ctx, `DELETE FROM apqueue_domains WHERE domain = ?`, domain)
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	})
	if err != nil {
		return s.fail(ctx, op, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: %s %q: %w", op, domain, store.ErrNotFound)
	}
	return nil
}

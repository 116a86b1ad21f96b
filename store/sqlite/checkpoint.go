package sqlite

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/apqueue/apqueue/store"
)

const stateCols = 15

// checkpointSQL saves every state of its VALUES rows whose owner still
// holds the lease with its token and that is based on the domain's current
// revision, and returns the saved domains. A saved cursor never moves a
// cursor backwards.
func checkpointSQL(rows int) string {
	return `WITH st(domain, owner, token, cursor, status, fail_count, failing_since, next_attempt_at,
	last_status, last_error, last_success_at, revision, progress, signature_scheme, signature_checked_at)
	AS (VALUES ` + values(rows, stateCols) + `)
UPDATE apqueue_domains AS d SET cursor = max(d.cursor, st.cursor), status = st.status, fail_count = st.fail_count,
	failing_since = st.failing_since, next_attempt_at = st.next_attempt_at,
	last_status = st.last_status, last_error = st.last_error, last_success_at = st.last_success_at,
	progress = st.progress, signature_scheme = st.signature_scheme, signature_checked_at = st.signature_checked_at
FROM st
WHERE d.domain = st.domain AND st.owner <> '' AND d.owner = st.owner AND d.lease_token = st.token
	AND d.revision = st.revision
RETURNING domain`
}

// leaseHoldersSQL reads the lease of the domains in a JSON list, to tell a
// lost lease from a stale state.
const leaseHoldersSQL = `SELECT domain, owner, lease_token FROM apqueue_domains
WHERE domain IN (SELECT value FROM json_each(?))`

const deadLetterCols = 11

// deadLetterSQL records the dead letters of its VALUES rows, in the order
// of their ord column, but not those whose delivery (activity, domain and
// inbox) already has one: a delivery given up on twice, by two owners or
// before and after a crash, is recorded, and requeued, once.
func deadLetterSQL(rows int) string {
	return `WITH x(ord, activity_id, domain, inbox, actor, ordering_key, body, status, reason, attempts, created_at)
	AS (VALUES ` + values(rows, deadLetterCols) + `)
INSERT INTO apqueue_dead_letters
	(activity_id, domain, inbox, actor, ordering_key, body, status, reason, attempts, created_at)
SELECT activity_id, domain, inbox, actor, ordering_key, body, status, reason, attempts, created_at FROM x
WHERE NOT EXISTS (SELECT 1 FROM apqueue_dead_letters e
	WHERE e.activity_id = x.activity_id AND e.domain = x.domain AND e.inbox = x.inbox)
ORDER BY ord`
}

// Checkpoint implements store.Store in one write transaction: one UPDATE
// for all states (a second statement reads the leases of refused domains,
// when there are any) and one INSERT for the dead letters. When a domain
// appears more than once in states, the last state wins; a delivery named
// by more than one dead letter is recorded once.
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
	given := store.LatestStates(states)
	var lost, stale []string
	err := s.write(ctx, func(q querier) error {
		lost, stale = nil, nil
		saved, err := s.saveStates(ctx, q, given)
		if err != nil {
			return err
		}
		lost, stale, err = s.refusals(ctx, q, given, saved)
		if err != nil {
			return err
		}
		return s.insertDeadLetters(ctx, q, deadLetters, given, saved)
	})
	if err != nil {
		return s.fail(ctx, op, err)
	}
	return store.CheckpointRefused(lost, stale)
}

// saveStates runs checkpointSQL and returns the set of saved domains.
func (s *Store) saveStates(ctx context.Context, q querier, given []store.DomainState) (map[string]bool, error) {
	saved := make(map[string]bool, len(given))
	err := chunks(len(given), stateCols, func(from, to int) error {
		args := make([]any, 0, (to-from)*stateCols)
		for _, st := range given[from:to] {
			progress, err := progressJSON(st.Progress)
			if err != nil {
				return fmt.Errorf("progress of %s: %w", st.Domain, err)
			}
			args = append(args, st.Domain, st.Owner, st.LeaseToken, st.Cursor, string(st.Status), st.FailCount,
				toMicros(st.FailingSince), toMicros(st.NextAttemptAt), st.LastStatus, st.LastError,
				toMicros(st.LastSuccessAt), st.Revision, progress, st.SignatureScheme, toMicros(st.SignatureCheckedAt))
		}
		s.count(1)
		rows, err := q.QueryContext(ctx, checkpointSQL(to-from), args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				return err
			}
			saved[d] = true
		}
		return rows.Err()
	})
	return saved, err
}

// refusals sorts the given states that were not saved into lost leases
// and stale states, judged on the current rows.
func (s *Store) refusals(ctx context.Context, q querier, given []store.DomainState, saved map[string]bool) (lost, stale []string, err error) {
	var refused []string
	for _, st := range given {
		if !saved[st.Domain] {
			refused = append(refused, st.Domain)
		}
	}
	if len(refused) == 0 {
		return nil, nil, nil
	}
	type holder struct {
		owner string
		token int64
	}
	held := make(map[string]holder, len(refused))
	s.count(1)
	rows, err := q.QueryContext(ctx, leaseHoldersSQL, jsonList(refused))
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			d string
			h holder
		)
		if err := rows.Scan(&d, &h.owner, &h.token); err != nil {
			return nil, nil, err
		}
		held[d] = h
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	for _, st := range given {
		if saved[st.Domain] {
			continue
		}
		h, ok := held[st.Domain]
		if ok && st.Owner != "" && h.owner == st.Owner && h.token == st.LeaseToken {
			stale = append(stale, st.Domain)
		} else {
			lost = append(lost, st.Domain)
		}
	}
	return lost, stale, nil
}

// insertDeadLetters records the dead letters of every domain that is not
// among the given states or was saved, once per delivery.
func (s *Store) insertDeadLetters(ctx context.Context, q querier, deadLetters []store.DeadLetter,
	given []store.DomainState, saved map[string]bool) error {
	inStates := make(map[string]bool, len(given))
	for _, st := range given {
		inStates[st.Domain] = true
	}
	type delivery struct {
		activity      int64
		domain, inbox string
	}
	seen := make(map[delivery]bool, len(deadLetters))
	keep := make([]store.DeadLetter, 0, len(deadLetters))
	for _, dl := range deadLetters {
		k := delivery{dl.ActivityID, dl.Domain, dl.Inbox}
		if (!inStates[dl.Domain] || saved[dl.Domain]) && !seen[k] {
			seen[k] = true
			keep = append(keep, dl)
		}
	}
	at := now()
	return chunks(len(keep), deadLetterCols, func(from, to int) error {
		args := make([]any, 0, (to-from)*deadLetterCols)
		for i, dl := range keep[from:to] {
			created := toMicros(dl.CreatedAt)
			if created == nil {
				created = at
			}
			body := dl.Body
			if body == nil {
				body = []byte{}
			}
			args = append(args, from+i, dl.ActivityID, dl.Domain, dl.Inbox, dl.Actor, dl.OrderingKey, body,
				dl.Status, dl.Reason, dl.Attempts, created)
		}
		s.count(1)
		_, err := q.ExecContext(ctx, deadLetterSQL(to-from), args...)
		return err
	})
}

// progressJSON encodes a domain's progress for the progress column; nil is
// NULL.
func progressJSON(p *store.Progress) (any, error) {
	if p == nil {
		return nil, nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

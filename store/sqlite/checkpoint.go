package sqlite

import (
	"context"

	"github.com/apqueue/apqueue/store"
)

const stateCols = 12

// checkpointSQL saves every state of its VALUES rows whose owner still
// holds the lease with its token and that is based on the domain's current
// revision, and returns the saved domains.
func checkpointSQL(rows int) string {
	return `WITH st(domain, owner, token, cursor, status, fail_count, failing_since, next_attempt_at,
	last_status, last_error, last_success_at, revision) AS (VALUES ` + values(rows, stateCols) + `)
UPDATE apqueue_domains AS d SET cursor = st.cursor, status = st.status, fail_count = st.fail_count,
	failing_since = st.failing_since, next_attempt_at = st.next_attempt_at,
	last_status = st.last_status, last_error = st.last_error, last_success_at = st.last_success_at
FROM st
WHERE d.domain = st.domain AND st.owner <> '' AND d.owner = st.owner AND d.lease_token = st.token
	AND d.revision = st.revision
RETURNING domain`
}

// leaseHoldersSQL reads the lease of the domains in a JSON list, to tell a
// lost lease from a stale state.
const leaseHoldersSQL = `SELECT domain, owner, lease_token FROM apqueue_domains
WHERE domain IN (SELECT value FROM json_each(?))`

const deadLetterCols = 10

const deadLetterInsert = `INSERT INTO apqueue_dead_letters
	(activity_id, domain, inbox, actor, ordering_key, body, status, reason, attempts, created_at) VALUES `

// Checkpoint implements store.Store in one write transaction: one UPDATE
// for all states (a second statement reads the leases of refused domains,
// when there are any) and one INSERT for the dead letters. When a domain
// appears more than once in states, the last state wins.
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
			args = append(args, st.Domain, st.Owner, st.LeaseToken, st.Cursor, string(st.Status), st.FailCount,
				toMicros(st.FailingSince), toMicros(st.NextAttemptAt), st.LastStatus, st.LastError,
				toMicros(st.LastSuccessAt), st.Revision)
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
// among the given states or was saved.
func (s *Store) insertDeadLetters(ctx context.Context, q querier, deadLetters []store.DeadLetter,
	given []store.DomainState, saved map[string]bool) error {
	inStates := make(map[string]bool, len(given))
	for _, st := range given {
		inStates[st.Domain] = true
	}
	keep := make([]store.DeadLetter, 0, len(deadLetters))
	for _, dl := range deadLetters {
		if !inStates[dl.Domain] || saved[dl.Domain] {
			keep = append(keep, dl)
		}
	}
	at := now()
	return chunks(len(keep), deadLetterCols, func(from, to int) error {
		args := make([]any, 0, (to-from)*deadLetterCols)
		for _, dl := range keep[from:to] {
			created := toMicros(dl.CreatedAt)
			if created == nil {
				created = at
			}
			body := dl.Body
			if body == nil {
				body = []byte{}
			}
			args = append(args, dl.ActivityID, dl.Domain, dl.Inbox, dl.Actor, dl.OrderingKey, body,
				dl.Status, dl.Reason, dl.Attempts, created)
		}
		s.count(1)
		_, err := q.ExecContext(ctx, deadLetterInsert+values(to-from, deadLetterCols), args...)
		return err
	})
}

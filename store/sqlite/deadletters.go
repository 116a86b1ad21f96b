package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/apqueue/apqueue/store"
)

// deadLettersSQL selects by AfterID, domain (” for any) and, when the
// flag is set, the IDs of a JSON list.
const deadLettersSQL = `SELECT id, activity_id, domain, inbox, actor, ordering_key, body, status, reason, attempts, created_at
FROM apqueue_dead_letters
WHERE id > ? AND (? = '' OR domain = ?) AND (NOT ? OR id IN (SELECT value FROM json_each(?)))
ORDER BY id
LIMIT ?`

// deadLettersByActivitySQL is deadLettersSQL for one activity (the last
// argument), a statement of its own so that it reads the activity's rows
// through apqueue_dead_letters_delivery_idx.
const deadLettersByActivitySQL = `SELECT id, activity_id, domain, inbox, actor, ordering_key, body, status, reason, attempts, created_at
FROM apqueue_dead_letters
WHERE activity_id = ? AND id > ? AND (? = '' OR domain = ?) AND (NOT ? OR id IN (SELECT value FROM json_each(?)))
ORDER BY id
LIMIT ?`

const deleteDeadLettersSQL = `DELETE FROM apqueue_dead_letters WHERE id IN (SELECT value FROM json_each(?))`

// DeadLetters implements store.Store.
func (s *Store) DeadLetters(ctx context.Context, filter store.DeadLetterFilter) ([]store.DeadLetter, error) {
	const op = "read dead letters"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	limit, err := filter.EffectiveLimit()
	if err != nil {
		return nil, refused(op, err)
	}
	// A nil IDs filter means no filter, an empty one matches nothing.
	s.count(1)
	query, args := deadLettersSQL, []any{filter.AfterID, filter.Domain, filter.Domain, filter.IDs != nil, jsonInts(filter.IDs), limit}
	if filter.ActivityID != 0 {
		query, args = deadLettersByActivitySQL, append([]any{filter.ActivityID}, args...)
	}
	rows, err := s.query(ctx, query, args...)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	defer rows.Close()
	var out []store.DeadLetter
	for rows.Next() {
		var (
			dl store.DeadLetter
			at sql.NullInt64
		)
		if err := rows.Scan(&dl.ID, &dl.ActivityID, &dl.Domain, &dl.Inbox, &dl.Actor, &dl.OrderingKey, &dl.Body,
			&dl.Status, &dl.Reason, &dl.Attempts, &at); err != nil {
			return nil, s.fail(ctx, op, err)
		}
		dl.CreatedAt = fromMicros(at)
		out = append(out, dl)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// DeleteDeadLetters implements store.Store in one statement, in a write
// transaction so that it takes its turn with the Store's other writes.
func (s *Store) DeleteDeadLetters(ctx context.Context, ids []int64) (int, error) {
	const op = "delete dead letters"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	var n int64
	err := s.write(ctx, func(q querier) error {
		s.count(1)
		res, err := q.ExecContext(ctx, deleteDeadLettersSQL, jsonInts(ids))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return int(n), nil
}

var _ store.DeadLetterPruner = (*Store)(nil)

const pruneDeadLettersByAgeSQL = `DELETE FROM apqueue_dead_letters WHERE created_at < ?`

// pruneDeadLettersByCapSQL deletes, of every domain, the dead letters
// beyond the newest ? (by ID, the order they were recorded in).
const pruneDeadLettersByCapSQL = `DELETE FROM apqueue_dead_letters WHERE id IN (
	SELECT id FROM (
		SELECT id, row_number() OVER (PARTITION BY domain ORDER BY id DESC) AS n FROM apqueue_dead_letters)
	WHERE n > ?)`

// PruneDeadLetters implements store.DeadLetterPruner in one write
// transaction: one DELETE by age, one by the cap per domain.
func (s *Store) PruneDeadLetters(ctx context.Context, olderThan time.Time, perDomain int) (int, error) {
	const op = "prune dead letters"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	if perDomain < 0 {
		return 0, invalid(op, "negative cap per domain %d", perDomain)
	}
	var deleted int64
	err := s.write(ctx, func(q querier) error {
		deleted = 0
		if !olderThan.IsZero() {
			// Created before olderThan, at the microsecond the store keeps:
			// before its next whole microsecond when it has a fraction.
			cutoff := olderThan.Truncate(time.Microsecond)
			if cutoff.Before(olderThan) {
				cutoff = cutoff.Add(time.Microsecond)
			}
			s.count(1)
			res, err := q.ExecContext(ctx, pruneDeadLettersByAgeSQL, cutoff.UnixMicro())
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			deleted += n
		}
		if perDomain > 0 {
			s.count(1)
			res, err := q.ExecContext(ctx, pruneDeadLettersByCapSQL, perDomain)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			deleted += n
		}
		return nil
	})
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return int(deleted), nil
}

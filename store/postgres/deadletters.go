package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/apqueue/apqueue/store"
)

const deadLettersSQL = `SELECT id, activity_id, domain, inbox, actor, ordering_key, body, status, reason, attempts, created_at
FROM {s}.dead_letters
WHERE id > $1 AND ($2::text = '' OR domain = $2::text) AND ($4::bigint[] IS NULL OR id = ANY($4::bigint[]))
ORDER BY id
LIMIT $3`

// deadLettersByActivitySQL is deadLettersSQL for one activity ($5), a
// statement of its own so that every plan of it reads the activity's rows
// through dead_letters_delivery_idx.
const deadLettersByActivitySQL = `SELECT id, activity_id, domain, inbox, actor, ordering_key, body, status, reason, attempts, created_at
FROM {s}.dead_letters
WHERE activity_id = $5 AND id > $1 AND ($2::text = '' OR domain = $2::text) AND ($4::bigint[] IS NULL OR id = ANY($4::bigint[]))
ORDER BY id
LIMIT $3`

const deleteDeadLettersSQL = `DELETE FROM {s}.dead_letters WHERE id = ANY($1::bigint[])`

// expireDeadLettersSQL deletes up to $2 dead letters created before $1,
// oldest first.
const expireDeadLettersSQL = `DELETE FROM {s}.dead_letters
WHERE id IN (SELECT id FROM {s}.dead_letters WHERE created_at < $1 ORDER BY id LIMIT $2)`

// capDeadLettersSQL deletes up to $2 dead letters beyond the newest $1 of
// their domain.
const capDeadLettersSQL = `DELETE FROM {s}.dead_letters
WHERE id IN (
	SELECT r.id FROM (
		SELECT id, row_number() OVER (PARTITION BY domain ORDER BY id DESC) AS rn FROM {s}.dead_letters
	) r
	WHERE r.rn > $1
	ORDER BY r.id
	LIMIT $2)`

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
	s.count(1)
	// A nil IDs filter is sent as NULL (no filter), an empty one as an empty
	// array (nothing matches).
	query, args := s.sql.deadLetters, []any{filter.AfterID, filter.Domain, limit, filter.IDs}
	if filter.ActivityID != 0 {
		query, args = s.sql.deadLettersByActivity, append(args, filter.ActivityID)
	}
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.DeadLetter, error) {
		var (
			dl store.DeadLetter
			at pgtype.Timestamptz
		)
		err := row.Scan(&dl.ID, &dl.ActivityID, &dl.Domain, &dl.Inbox, &dl.Actor, &dl.OrderingKey, &dl.Body,
			&dl.Status, &dl.Reason, &dl.Attempts, &at)
		dl.CreatedAt = fromTS(at)
		return dl, err
	})
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// DeleteDeadLetters implements store.Store.
func (s *Store) DeleteDeadLetters(ctx context.Context, ids []int64) (int, error) {
	const op = "delete dead letters"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	s.count(1)
	tag, err := s.pool.Exec(ctx, s.sql.deleteDeadLetters, ids)
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return int(tag.RowsAffected()), nil
}

// PruneDeadLetters implements store.DeadLetterPruner, in batches of at
// most pruneBatch rows, each in a maintenance transaction whose locks wait
// at most Config.LockTimeout (a step that times out returns an error
// matching ErrLockTimeout, having deleted what the batches before it did).
func (s *Store) PruneDeadLetters(ctx context.Context, olderThan time.Time, perDomain int) (int, error) {
	const op = "prune dead letters"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	if perDomain < 0 {
		return 0, invalid(op, "negative cap per domain %d", perDomain)
	}
	var total int64
	if !olderThan.IsZero() {
		n, err := s.deleteInBatches(ctx, s.sql.expireDeadLetters, toTS(olderThan))
		total += n
		if err != nil {
			return int(total), s.fail(ctx, op, err)
		}
	}
	if perDomain > 0 {
		n, err := s.deleteInBatches(ctx, s.sql.capDeadLetters, perDomain)
		total += n
		if err != nil {
			return int(total), s.fail(ctx, op, err)
		}
	}
	return int(total), nil
}

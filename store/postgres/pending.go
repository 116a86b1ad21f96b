package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// OpenTransactions describes the callers' transactions of processes of the
// previous release (schema version 3) that reserved IDs and have not ended
// yet: readers do not pass the first ID such a transaction holds, so one
// left open holds back delivery of everything enqueued after it. This
// release's transactions reserve nothing and hold back nothing, so outside
// a rolling upgrade Count is zero.
type OpenTransactions struct {
	// Count is the number of open transactions holding reserved IDs.
	Count int
	// FirstID is the lowest ID they hold; the safe head is just below it.
	// Zero when Count is zero.
	FirstID int64
	// Oldest is when the oldest of them reserved its IDs; zero when Count
	// is zero.
	Oldest time.Time
}

const openTransactionsSQL = `SELECT count(*), coalesce(min(first_id), 0), min(reserved_at)
FROM {s}.pending_appends
WHERE NOT pg_visible_in_snapshot(xid, pg_current_snapshot())`

// OpenTransactions reports the transactions of the previous release's
// AppendTx callers that are still open, for monitoring a rolling upgrade:
// one that stays open for long holds back every activity enqueued after it.
func (s *Store) OpenTransactions(ctx context.Context) (OpenTransactions, error) {
	const op = "read open transactions"
	if err := checkCtx(ctx, op); err != nil {
		return OpenTransactions{}, err
	}
	var (
		o      OpenTransactions
		oldest pgtype.Timestamptz
	)
	s.count(1)
	if err := s.pool.QueryRow(ctx, s.sql.openTransactions).Scan(&o.Count, &o.FirstID, &oldest); err != nil {
		return OpenTransactions{}, s.fail(ctx, op, err)
	}
	o.Oldest = fromTS(oldest)
	return o, nil
}

package postgres

import (
	"context"
	"log/slog"
	"time"
)

// Vacuuming the staging table.
//
// Every activity enqueued in a caller's transaction is inserted into
// staged_activities and deleted from it moments later, when it is
// numbered; a transaction that rolls back leaves its rows dead too. Dead
// rows and their index entries stay until a vacuum. Meanwhile every read of
// the log and every poll of the commit watcher steps over the dead index
// entries to find the first staged row (stagedAnySQL), and new rows extend
// the table instead of reusing its pages. Autovacuum visits a table at most
// once per autovacuum_naptime (a minute by default), and a busy minute
// leaves tens of thousands of dead rows; where autovacuum is off, they pile
// up for good.
//
// So the commit watcher of the process that staged the rows vacuums the
// table itself: after a poll, once the transactions it has seen end since
// its last vacuum staged stagingVacuumRows rows or more, and at most once
// per stagingVacuumInterval. A trickle of enqueues is left to autovacuum.
// The statement (stagingVacuumSQL) runs on the pool, outside any
// transaction (VACUUM cannot run in one; behind pgBouncer in transaction
// mode it is one statement like any other). It skips the table while
// another vacuum holds it (SKIP_LOCKED), and does not truncate it
// (TRUNCATE false): truncating takes an ACCESS EXCLUSIVE lock, which would
// hold callers' enqueues back, and the next rows reuse the pages anyway. A
// role that owns neither the table nor the database gets a warning from
// PostgreSQL, not an error, and the vacuum does nothing. A vacuum that
// fails or takes longer than stagingVacuumTimeout is logged, and the next
// is tried stagingVacuumRetry later. The watcher waits for it: it takes a
// few milliseconds for the rows of a second.
//
// A vacuum cannot remove rows that a transaction older than their deletion
// may still see: while such a transaction stays open, vacuums free nothing
// (and cost little: the pages they read are few and cached).
const (
	stagingVacuumRows     = 1000
	stagingVacuumInterval = time.Second
	stagingVacuumTimeout  = 2 * time.Second
	stagingVacuumRetry    = time.Minute
)

const stagingVacuumSQL = `VACUUM (SKIP_LOCKED, TRUNCATE false) {s}.staged_activities`

// vacuumDue counts ended, the rows staged by the transactions that a poll
// saw end, and reports whether the commit watcher should vacuum the
// staging table now; if so, the next period starts. The caller holds the
// watcher's mutex.
func (s *Store) vacuumDue(ended int, now time.Time) bool {
	w := &s.watcher
	w.endedRows += ended
	if w.endedRows < s.stagingVacuumRows || now.Before(w.vacuumAfter) {
		return false
	}
	w.endedRows = 0
	w.vacuumAfter = now.Add(s.stagingVacuumInterval)
	return true
}

// vacuumStaging vacuums the staging table (see stagingVacuumSQL). On
// failure it logs the error and puts the next vacuum off by
// stagingVacuumRetry.
func (s *Store) vacuumStaging() {
	ctx, cancel := s.watcherContext(stagingVacuumTimeout)
	defer cancel()
	s.count(1)
	_, err := s.pool.Exec(ctx, s.sql.vacuumStaging)
	if err == nil {
		s.watcher.vacuums.Add(1)
		return
	}
	select {
	case <-s.watcher.stop:
		return // the store was closed during the vacuum
	default:
	}
	s.logger.Warn("apqueue: postgres: vacuuming the staging table failed; autovacuum is left to it for a while",
		slog.String("schema", s.schema), slog.Duration("retry_in", stagingVacuumRetry), slog.Any("error", err))
	s.watcher.mu.Lock()
	s.watcher.vacuumAfter = time.Now().Add(stagingVacuumRetry)
	s.watcher.mu.Unlock()
}

// watcherContext returns a context for one statement of the commit
// watcher: done after timeout, or as soon as the store is closed.
func (s *Store) watcherContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	go func() {
		select {
		case <-s.watcher.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

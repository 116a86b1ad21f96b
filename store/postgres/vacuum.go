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
// table itself: once the transactions it saw end since its last vacuum
// staged stagingVacuumRows rows or more, after the poll that saw them end
// or, within stagingVacuumInterval of the last vacuum, when that interval
// has passed (the watcher keeps running until then). The statement
// (stagingVacuumSQL) runs on the pool, outside any transaction (VACUUM
// cannot run in one; behind pgBouncer in transaction mode it is one
// statement like any other). It skips the table while another vacuum holds
// it (SKIP_LOCKED), and does not truncate it (TRUNCATE false): truncating
// takes an ACCESS EXCLUSIVE lock, which would hold callers' enqueues back,
// and the next rows reuse the pages anyway.
//
// The watcher waits for the vacuum, which takes a few milliseconds for the
// rows of a second. A vacuum cannot remove rows that a transaction older
// than their deletion may still see: while such a transaction stays open,
// the table grows and each vacuum reads more of it. So a vacuum is followed
// by stagingVacuumPace times its duration without one, which bounds the
// watcher's time spent vacuuming to about 5 %. A vacuum that fails or takes
// longer than stagingVacuumTimeout is logged, and the next is tried
// stagingVacuumRetry later.
//
// Only a role that may vacuum the table gets anything done (PostgreSQL
// skips the table with a warning in its log otherwise): its owner, the
// database's owner, a superuser, or from PostgreSQL 17 a role with the
// MAINTAIN privilege. The watcher checks that once (mayVacuumSQL) and, for
// any other role, logs once and leaves the table to autovacuum.
const (
	stagingVacuumRows     = 1000
	stagingVacuumInterval = time.Second
	stagingVacuumPace     = 20
	stagingVacuumTimeout  = 2 * time.Second
	stagingVacuumRetry    = time.Minute
)

const stagingVacuumSQL = `VACUUM (SKIP_LOCKED, TRUNCATE false) {s}.staged_activities`

// mayVacuumSQL tells whether the current role may vacuum the staging
// table (see above); pg_has_role's USAGE is true for a superuser too.
const mayVacuumSQL = `SELECT pg_has_role(c.relowner, 'USAGE')
	OR pg_has_role((SELECT d.datdba FROM pg_database d WHERE d.datname = current_database()), 'USAGE')
	OR CASE WHEN current_setting('server_version_num')::int >= 170000
		THEN has_table_privilege(c.oid, 'MAINTAIN') ELSE false END
FROM pg_class c WHERE c.oid = '{s}.staged_activities'::regclass`

// vacuumState is the commit watcher's record of the staging table's vacuums.
// The watcher's mutex guards it.
type vacuumState struct {
	endedRows int       // rows staged by the transactions ended since the last vacuum
	after     time.Time // no vacuum before
	checked   bool      // whether the role may vacuum was asked (mayVacuumSQL)
	off       bool      // it may not, or vacuums are turned off
}

// vacuumWait counts ended, the rows staged by the transactions a poll saw
// end, and returns whether a vacuum of the staging table is owed and how
// long until it may run: 0 for now, and then the next period starts. The
// caller holds the watcher's mutex.
func (s *Store) vacuumWait(ended int, now time.Time) (owed bool, wait time.Duration) {
	v := &s.watcher.vacuum
	v.endedRows += ended
	if v.off || v.endedRows < s.stagingVacuumRows {
		return false, 0
	}
	if wait := v.after.Sub(now); wait > 0 {
		return true, wait
	}
	v.endedRows = 0
	v.after = now.Add(s.stagingVacuumInterval)
	return true, 0
}

// vacuumStaging vacuums the staging table (see stagingVacuumSQL), asking
// first, the first time, whether the role may.
func (s *Store) vacuumStaging() {
	ctx, cancel := s.watcherContext(stagingVacuumTimeout)
	defer cancel()
	w := &s.watcher
	w.mu.Lock()
	checked := w.vacuum.checked
	w.mu.Unlock()
	if !checked {
		s.count(1)
		var may bool
		if err := s.pool.QueryRow(ctx, s.sql.mayVacuum).Scan(&may); err != nil {
			s.vacuumFailed(time.Now(), err)
			return
		}
		w.mu.Lock()
		w.vacuum.checked, w.vacuum.off = true, !may
		w.mu.Unlock()
		if !may {
			s.logger.Info("apqueue: postgres: this role may not vacuum the staging table; autovacuum is left to do it",
				slog.String("schema", s.schema))
			return
		}
	}
	s.count(1)
	start := time.Now()
	_, err := s.pool.Exec(ctx, s.sql.vacuumStaging)
	if err != nil {
		s.vacuumFailed(start, err)
		return
	}
	w.vacuums.Add(1)
	end := time.Now()
	w.mu.Lock()
	if next := end.Add(stagingVacuumPace * end.Sub(start)); next.After(w.vacuum.after) {
		w.vacuum.after = next
	}
	w.mu.Unlock()
}

// vacuumFailed logs a failed vacuum (or check) that started at start, unless
// the store was closed meanwhile, and puts the next off by
// stagingVacuumRetry.
func (s *Store) vacuumFailed(start time.Time, err error) {
	select {
	case <-s.watcher.stop:
		return
	default:
	}
	s.logger.Warn("apqueue: postgres: vacuuming the staging table failed; leaving it to autovacuum for a while",
		slog.String("schema", s.schema), slog.Duration("retry_in", stagingVacuumRetry), slog.Any("error", err))
	s.watcher.mu.Lock()
	s.watcher.vacuum.after = start.Add(stagingVacuumRetry)
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

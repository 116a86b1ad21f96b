package postgres

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/apqueue/apqueue/store"
)

// SetListenPing shortens s's listener health check, for tests. Call it
// before Listen.
func SetListenPing(s *Store, interval, timeout time.Duration) {
	s.pingInterval, s.pingTimeout = interval, timeout
}

// MigrateTo applies s's migrations up to version, for upgrade tests.
func MigrateTo(ctx context.Context, s *Store, version int) (int, error) {
	return s.migrate(ctx, version)
}

// PruneBatch is the most rows one maintenance statement deletes.
const PruneBatch = pruneBatch

// AppendIn runs s's Append statement for activities inside tx, so that a
// test can hold the counter's lock as an Append in progress does.
func AppendIn(ctx context.Context, s *Store, tx pgx.Tx, activities []store.NewActivity) ([]int64, error) {
	b, err := newBatch("append", activities)
	if err != nil {
		return nil, err
	}
	var (
		prev, numbered int64
		claimed        []int64
		suspended      []string
	)
	err = tx.QueryRow(ctx, s.sql.append, b.n, b.actors, b.keys, b.bodies, b.inboxes, b.doms, b.audies, b.all,
		b.newDomains, s.channel, b.keyOrds, b.keyNames, b.keyWindows).Scan(&prev, &numbered, &claimed, &suspended)
	return b.ids(prev), err
}

// SetWatchGiveUp shortens how long s's commit watcher retries failing
// polls, for tests. Call it before AppendTx.
func SetWatchGiveUp(s *Store, d time.Duration) { s.watchGiveUp = d }

// MigrationCount is the number of embedded migrations (versions may have
// gaps while the files of other branches are not merged).
func MigrationCount() int {
	ms, _ := migrations()
	return len(ms)
}

// SweepLimit is how many staged activities one sequencer statement numbers.
const SweepLimit = sweepLimit

// Watch adds the transaction xid (xid8, as text) to s's commit watcher, as
// AppendTx does.
func Watch(s *Store, xid string) { s.watch(xid, 1) }

// SetStagingVacuum sets after how many ended rows, and how long at least
// after the last, s's commit watcher vacuums the staging table, for tests.
// Call it before AppendTx.
func SetStagingVacuum(s *Store, rows int, interval time.Duration) {
	s.stagingVacuumRows, s.stagingVacuumInterval = rows, interval
}

// StagingVacuums is how many VACUUM statements of the staging table s's
// commit watcher has seen return without error.
func StagingVacuums(s *Store) int64 { return s.watcher.vacuums.Load() }

// MayVacuumSQL is the statement, in s's schema, that tells whether the
// current role may vacuum the staging table.
func MayVacuumSQL(s *Store) string { return s.sql.mayVacuum }

// WatcherRunning reports whether s's commit watcher's goroutine runs: it
// stops at its first tick with no transaction left, after any vacuum.
func WatcherRunning(s *Store) bool {
	s.watcher.mu.Lock()
	defer s.watcher.mu.Unlock()
	return s.watcher.running
}

// WatcherWakes is how often s's commit watcher has woken up so far.
func WatcherWakes(s *Store) int64 { return s.watcher.wakes.Load() }

// StagedAnySQL is the check, in s's schema, that readers and the commit
// watcher make for staged rows.
func StagedAnySQL(s *Store) string {
	return strings.ReplaceAll(stagedAnySQL, "{s}", pgx.Identifier{s.schema}.Sanitize())
}

package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// minVersion is the oldest SQLite the store's statements run on: UPDATE
// ... FROM came in 3.33, RETURNING in 3.35 (March 2021).
var minVersion = [3]int{3, 35, 0}

// Connection settings are per connection in SQLite, and database/sql opens
// connections when it likes, so the embedder sets them in the DSN, for
// every connection the driver opens, and checkSettings verifies them on
// one (all connections of a *sql.DB come from the same DSN). A PRAGMA run
// with db.Exec changes a single pooled connection, and is not enough.
//
//   - journal_mode must keep a journal on disk; Migrate switches the file to
//     WAL, which is a property of the file and lasts: readers do not block
//     the writer nor the writer the readers, and a commit is one append to
//     the WAL.
//   - synchronous must be FULL (2) or EXTRA (3). In WAL mode, FULL syncs the
//     WAL at every commit, so a transaction acknowledged before a power loss
//     is there after it; NORMAL syncs only at checkpoints, and a power loss
//     can take back the last commits (a process crash cannot). FULL is
//     SQLite's default: it is refused only when the DSN lowered it.
//   - busy_timeout must be above 0: the queue writes from several
//     goroutines (enqueues, checkpoints, lease renewals), and other
//     processes may too; with no timeout a writer that finds the lock taken
//     fails at once instead of waiting its turn.
func (s *Store) checkSettings(ctx context.Context, conn *sql.Conn) error {
	var version string
	s.count(1)
	if err := conn.QueryRowContext(ctx, "SELECT sqlite_version()").Scan(&version); err != nil {
		return err
	}
	if !atLeast(version, minVersion) {
		return fmt.Errorf("SQLite %s is older than %d.%d.%d, which the store needs: %w",
			version, minVersion[0], minVersion[1], minVersion[2], ErrUnsafeSettings)
	}
	var mode string
	s.count(1)
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if mode = strings.ToLower(mode); mode == "off" || mode == "memory" {
		return fmt.Errorf("journal_mode is %s (an in-memory database, or journal_mode set in the DSN): "+
			"open a database file, without a journal_mode or with journal_mode WAL: %w", mode, ErrUnsafeSettings)
	}
	var sync, timeout int
	s.count(2)
	if err := conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return err
	}
	if sync < 2 {
		return fmt.Errorf("synchronous is %d, below FULL (2): a power loss could undo acknowledged enqueues; "+
			"open the database with synchronous FULL (modernc.org/sqlite, ncruces: _pragma=synchronous(full); "+
			"mattn: _synchronous=FULL), if need be with a *sql.DB of its own on the same file: %w", sync, ErrUnsafeSettings)
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&timeout); err != nil {
		return err
	}
	if timeout <= 0 {
		return fmt.Errorf("busy_timeout is 0: concurrent writers would fail at once; open the database with "+
			"a busy timeout (modernc.org/sqlite, ncruces: _pragma=busy_timeout(5000); mattn: _busy_timeout=5000): %w",
			ErrUnsafeSettings)
	}
	return nil
}

// useWAL switches the file to WAL mode unless it is in it already, and
// checks that it is.
func (s *Store) useWAL(ctx context.Context, conn *sql.Conn) error {
	var mode string
	s.count(1)
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if strings.EqualFold(mode, "wal") {
		return nil
	}
	s.count(1)
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal_mode stays %s after PRAGMA journal_mode = WAL", mode)
	}
	return nil
}

// atLeast reports whether the dotted version v is at least min.
func atLeast(v string, min [3]int) bool {
	parts := strings.SplitN(v, ".", 3)
	for i := range min {
		n := 0
		if i < len(parts) {
			n, _ = strconv.Atoi(parts[i])
		}
		if n != min[i] {
			return n > min[i]
		}
	}
	return true
}

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/apqueue/apqueue/store"
)

var (
	// ErrNotMigrated is matched by errors from a database whose apqueue
	// tables, or some of their columns, do not exist: Migrate never ran on
	// it, or an older version of the library migrated it. Call Migrate.
	ErrNotMigrated = errors.New("sqlite: database not migrated to this library's version (call Migrate)")

	// ErrSchemaTooNew is returned by Migrate when a newer version of the
	// library migrated the database: this version does not know its schema
	// and refuses to work on it rather than half-understand it.
	ErrSchemaTooNew = errors.New("sqlite: database schema is newer than this library (upgrade apqueue)")

	// ErrUnsafeSettings is returned by Migrate when the connection's
	// settings would lose acknowledged enqueues or fail the queue's
	// concurrent writes: a journal_mode of OFF or MEMORY (an in-memory
	// database included), synchronous below FULL, or a busy_timeout of 0.
	// The error names the setting and the value needed.
	ErrUnsafeSettings = errors.New("sqlite: connection settings unsafe for a durable queue")

	// ErrBusy is matched by errors of calls that waited for another
	// connection's write lock longer than busy_timeout (SQLITE_BUSY,
	// "database is locked"). Nothing was written; the call can be retried.
	ErrBusy = errors.New("sqlite: database locked by another connection beyond busy_timeout")

	// ErrReadOnly is matched by errors of writes to a database opened
	// read-only, or a file or directory the process may not write.
	ErrReadOnly = errors.New("sqlite: database is read-only")

	// ErrFull is matched by errors of writes that found the disk full, or
	// the database at its max_page_count (SQLITE_FULL). Nothing was written.
	ErrFull = errors.New("sqlite: database or disk is full")

	// ErrCorrupt is matched by errors on a file that is not an SQLite
	// database or whose content is damaged (SQLITE_NOTADB, SQLITE_CORRUPT).
	ErrCorrupt = errors.New("sqlite: file is not a database or is corrupt")
)

// driverErrors maps the texts of SQLite's result codes, which every driver
// passes on in its error messages (sqlite3_errstr), to the store's errors.
// Matching the text rather than a driver's error type keeps the package
// free of any driver.
var driverErrors = []struct {
	texts []string
	err   error
}{
	{[]string{"database is locked", "database table is locked", "sqlite_busy", "sqlite_locked"}, ErrBusy},
	{[]string{"readonly database", "sqlite_readonly"}, ErrReadOnly},
	{[]string{"database or disk is full", "sqlite_full"}, ErrFull},
	{[]string{"file is not a database", "malformed", "sqlite_notadb", "sqlite_corrupt"}, ErrCorrupt},
	{[]string{"no such table", "no such column"}, ErrNotMigrated},
	{[]string{"constraint failed"}, store.ErrInvalid},
}

// fail turns an error from database/sql or the driver into the store's
// error for op. It is the one place where driver errors are mapped:
//
//   - once ctx has ended, the error wraps ctx.Err(), whatever the driver
//     returned;
//   - SQLite's result codes are matched by their text (driverErrors);
//   - anything else is wrapped as it is, so that the driver's error type
//     stays reachable with errors.As.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("sqlite: %s: %w (%v)", op, ctxErr, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("sqlite: %s: %w", op, err)
	}
	if mapped := classify(err); mapped != nil {
		return fmt.Errorf("sqlite: %s: %w: %w", op, mapped, err)
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// classify returns the store error that err's SQLite result code maps to,
// or nil.
func classify(err error) error {
	if errors.Is(err, ErrUnsafeSettings) || errors.Is(err, ErrSchemaTooNew) || errors.Is(err, store.ErrInvalid) {
		return nil // already the store's own
	}
	msg := strings.ToLower(err.Error())
	for _, m := range driverErrors {
		for _, text := range m.texts {
			if strings.Contains(msg, text) {
				return m.err
			}
		}
	}
	return nil
}

// checkCtx returns an error wrapping ctx.Err() when ctx has ended, so that
// a call with an ended context fails before it runs anything.
func checkCtx(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlite: %s: %w", op, err)
	}
	return nil
}

// invalid returns an error matching store.ErrInvalid.
func invalid(op, format string, args ...any) error {
	return fmt.Errorf("sqlite: %s: %s: %w", op, fmt.Sprintf(format, args...), store.ErrInvalid)
}

// refused says which call refused its arguments (err matches
// store.ErrInvalid).
func refused(op string, err error) error {
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// toMicros converts a time for the database: microseconds since the Unix
// epoch, truncated as the Store contract asks; the zero time is NULL.
func toMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.Round(0).Truncate(time.Microsecond).UnixMicro()
}

// fromMicros converts a time from the database; NULL is the zero time.
func fromMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

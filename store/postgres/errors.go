package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/apqueue/apqueue/store"
)

// ErrNotMigrated is matched by errors from a store whose schema, or one of
// its tables or columns, does not exist: the schema was never migrated, or
// was migrated by an older version of the library. Call Migrate.
var ErrNotMigrated = errors.New("postgres: schema not migrated to this library's version (call Migrate)")

// ErrLockTimeout is matched by errors from a maintenance step or a
// migration that gave up waiting for a lock (Config.LockTimeout), because
// another session held it.
var ErrLockTimeout = errors.New("postgres: gave up waiting for a lock another session holds (lock_timeout); this step changed nothing")

// fail turns an error from pgx into the store's error for op. It is the one
// place where driver and server errors are mapped to the store's errors:
//
//   - once ctx has ended, the error wraps ctx.Err(), whatever pgx returned;
//   - data exceptions (SQLSTATE class 22, such as a NUL byte in a string)
//     and check violations match store.ErrInvalid;
//   - a missing schema, table or column matches ErrNotMigrated;
//   - a lock wait that ran out (lock_timeout) matches ErrLockTimeout;
//   - anything else is wrapped as it is, so that *pgconn.PgError stays
//     reachable with errors.As.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("postgres: %s: %w (%v)", op, ctxErr, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "22", pgErr.Code == "23514":
			return fmt.Errorf("postgres: %s: %w: %w", op, store.ErrInvalid, err)
		case pgErr.Code == "3F000", pgErr.Code == "42P01", pgErr.Code == "42703":
			return fmt.Errorf("postgres: %s in schema %q: %w: %w", op, s.schema, ErrNotMigrated, err)
		case pgErr.Code == "55P03":
			return fmt.Errorf("postgres: %s: %w: %w", op, ErrLockTimeout, err)
		}
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// checkCtx returns an error wrapping ctx.Err() when ctx has ended, so that
// a call with an ended context fails before it sends anything.
func checkCtx(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	return nil
}

// invalid returns an error matching store.ErrInvalid.
func invalid(op, format string, args ...any) error {
	return fmt.Errorf("postgres: %s: %s: %w", op, fmt.Sprintf(format, args...), store.ErrInvalid)
}

// refused says which call refused its arguments (err matches
// store.ErrInvalid).
func refused(op string, err error) error {
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// toTS converts a time for the database: microseconds, as PostgreSQL keeps
// them, truncated rather than rounded so that the binary and text protocols
// agree; the zero time is NULL.
func toTS(t time.Time) pgtype.Timestamptz {
	if t.IsZero() {
		return pgtype.Timestamptz{}
	}
	return pgtype.Timestamptz{Time: t.Round(0).Truncate(time.Microsecond).UTC(), Valid: true}
}

// fromTS converts a time from the database; NULL is the zero time.
func fromTS(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

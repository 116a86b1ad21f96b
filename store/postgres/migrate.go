package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/apqueue/apqueue/internal/migration"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations returns the embedded migrations in version order.
func migrations() ([]migration.File, error) { return migration.Load(migrationFiles, "migrations") }

// LatestVersion is the schema version this version of the library migrates
// to.
func LatestVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return migration.Latest(ms)
}

// Migrate creates the store's schema and tables, or brings them up to
// LatestVersion, and returns the version it left the schema at.
//
// It is safe to call on every start from every process: migrations run in
// one transaction, serialised by a transaction-scoped advisory lock
// (pg_advisory_xact_lock, released at commit, so it works through
// pgBouncer), and a version already applied is skipped. Migrations only add
// tables, columns with defaults and indexes, so processes running an older
// version of the library keep working while newer ones migrate. A schema
// newer than this library is left alone.
//
// Every lock a migration takes waits at most Config.LockTimeout: a
// migration that needs a table some session holds (for example one left
// idle in a transaction) fails, changing nothing, with an error matching
// ErrLockTimeout, rather than queueing every enqueue behind it.
func (s *Store) Migrate(ctx context.Context) (int, error) {
	return s.migrate(ctx, 0)
}

// migrate applies the migrations up to version upTo (every one when upTo
// is zero).
func (s *Store) migrate(ctx context.Context, upTo int) (int, error) {
	const op = "migrate"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	ms, err := migrations()
	if err != nil {
		return 0, fmt.Errorf("postgres: %s: %w", op, err)
	}
	var version int
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		s.count(2) // BEGIN, COMMIT
		s.count(1)
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.migrationLockKey()); err != nil {
			return err
		}
		// Set after the advisory lock: a migrator waits for another one
		// as long as that one takes, but not for anyone else.
		s.count(1)
		if _, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", s.lockTimeout); err != nil {
			return err
		}
		schema := pgx.Identifier{s.schema}.Sanitize()
		// CREATE SCHEMA IF NOT EXISTS needs the database's CREATE privilege
		// even when the schema exists, which an application's role often
		// lacks: create only what is missing.
		var exists bool
		s.count(1)
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", schema+".schema_migrations").Scan(&exists); err != nil {
			return err
		}
		if !exists {
			s.count(1)
			if err := tx.Conn().PgConn().Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema+";\n"+
				"CREATE TABLE IF NOT EXISTS "+schema+".schema_migrations ("+
				"version integer PRIMARY KEY, name text NOT NULL, "+
				"applied_at timestamptz NOT NULL DEFAULT now())").Close(); err != nil {
				return err
			}
		}
		var applied []int
		s.count(1)
		rows, err := tx.Query(ctx, "SELECT version FROM "+schema+".schema_migrations")
		if err != nil {
			return err
		}
		applied, err = pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return err
		}
		for _, m := range ms {
			if slices.Contains(applied, m.Version) || (upTo > 0 && m.Version > upTo) {
				continue
			}
			sql := strings.ReplaceAll(m.SQL, "{s}", schema)
			s.count(2)
			if err := tx.Conn().PgConn().Exec(ctx, sql).Close(); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+schema+".schema_migrations (version, name) VALUES ($1, $2)",
				m.Version, m.Name); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			applied = append(applied, m.Version)
		}
		version = slices.Max(append(applied, 0))
		return nil
	})
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return version, nil
}

// Version returns the schema version applied to the store's schema, 0 when
// Migrate never ran there. Compare it with LatestVersion to see whether a
// migration is due.
func (s *Store) Version(ctx context.Context) (int, error) {
	const op = "read schema version"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	var v int
	s.count(1)
	err := s.pool.QueryRow(ctx, s.sql.version).Scan(&v)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "3F000" || pgErr.Code == "42P01") {
		return 0, nil
	}
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return v, nil
}

const versionSQL = `SELECT coalesce(max(version), 0) FROM {s}.schema_migrations`

// migrationLockKey is the advisory lock key that serialises migrations of
// this schema, and only of this schema.
func (s *Store) migrationLockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("apqueue migrate " + s.schema))
	return int64(h.Sum64())
}

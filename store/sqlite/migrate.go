package sqlite

import (
	"context"
	"embed"
	"fmt"
	"slices"
	"strings"

	"github.com/apqueue/apqueue/internal/migration"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations returns the embedded migrations in version order.
func migrations() ([]migration.File, error) { return migration.Load(migrationFiles, "migrations") }

// splitStatements splits a migration file into statements: each ends with
// a semicolon at the end of a line. Drivers differ in whether one Exec may
// run several statements, so Migrate runs them one by one.
func splitStatements(file string) []string {
	var out []string
	var cur strings.Builder
	for line := range strings.Lines(file) {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		if strings.HasSuffix(trimmed, ";") {
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		}
	}
	if rest := strings.TrimSpace(cur.String()); rest != "" {
		out = append(out, rest)
	}
	return out
}

// LatestVersion is the schema version this version of the library migrates
// to.
func LatestVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return migration.Latest(ms)
}

const createMigrationsSQL = `CREATE TABLE IF NOT EXISTS apqueue_schema_migrations (
	version    INTEGER PRIMARY KEY,
	name       TEXT    NOT NULL,
	applied_at INTEGER NOT NULL
)`

// Migrate checks the connection settings (see the package documentation),
// creates the store's tables or brings them up to LatestVersion, switches
// the file to WAL mode, and returns the version it left the schema at.
//
// It is safe to call on every start from every process: the migrations run
// in one BEGIN IMMEDIATE transaction, which SQLite's single writer
// serialises across processes, and a version already applied is skipped.
// A database migrated by a newer version of the library is refused with
// ErrSchemaTooNew, a file that is not a database with ErrCorrupt, a
// read-only one with ErrReadOnly, unsafe settings with ErrUnsafeSettings;
// nothing is written then.
func (s *Store) Migrate(ctx context.Context) (int, error) {
	const op = "migrate"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	ms, err := migrations()
	if err != nil {
		return 0, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	err = s.checkSettings(ctx, conn)
	s.release(conn, false)
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}

	var version int
	err = s.write(ctx, func(q querier) error {
		s.count(2)
		if _, err := q.ExecContext(ctx, createMigrationsSQL); err != nil {
			return err
		}
		rows, err := q.QueryContext(ctx, "SELECT version FROM apqueue_schema_migrations")
		if err != nil {
			return err
		}
		var applied []int
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return err
			}
			applied = append(applied, v)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if latest := migration.Latest(ms); len(applied) > 0 && slices.Max(applied) > latest {
			return fmt.Errorf("schema version %d, this library knows up to %d: %w",
				slices.Max(applied), latest, ErrSchemaTooNew)
		}
		for _, m := range ms {
			if slices.Contains(applied, m.Version) {
				continue
			}
			for _, stmt := range splitStatements(m.SQL) {
				s.count(1)
				if _, err := q.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("%s: %w", m.Name, err)
				}
			}
			s.count(1)
			if _, err := q.ExecContext(ctx, "INSERT INTO apqueue_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
				m.Version, m.Name, now()); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			applied = append(applied, m.Version)
		}
		version = slices.Max(applied)
		// A write, even when every migration was applied before, so that a
		// database the process may not write is refused here, at start,
		// rather than at the first enqueue.
		s.count(1)
		_, err = q.ExecContext(ctx, "UPDATE apqueue_id_counter SET last_id = last_id")
		return err
	})
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}

	conn, err = s.db.Conn(ctx)
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	err = s.useWAL(ctx, conn)
	s.release(conn, false)
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return version, nil
}

// Version returns the schema version applied to the database, 0 when
// Migrate never ran on it. Compare it with LatestVersion to see whether a
// migration is due.
func (s *Store) Version(ctx context.Context) (int, error) {
	const op = "read schema version"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	var v int
	s.count(1)
	err := s.db.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM apqueue_schema_migrations").Scan(&v)
	if err != nil && strings.Contains(err.Error(), "no such table") {
		return 0, nil
	}
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return v, nil
}

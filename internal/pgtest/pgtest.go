// Package pgtest gives tests a PostgreSQL connection pool of their own.
//
// Tests that need PostgreSQL call New. It reads the server's address from
// TEST_DATABASE_URL; without it the test is skipped with a message saying
// so, unless APQUEUE_REQUIRE_POSTGRES=1, which turns the skip into a failure
// (CI sets it so that a missing database cannot pass silently). Each call
// creates a schema with a unique name, dropped when the test ends, so tests
// run in parallel on one database.
//
//	TEST_DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' \
//	APQUEUE_REQUIRE_POSTGRES=1 go test ./store/postgres/
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvURL names the environment variable holding the test database's
// connection string.
const EnvURL = "TEST_DATABASE_URL"

// EnvRequire names the environment variable that, set to 1, makes a missing
// TEST_DATABASE_URL fail the test instead of skipping it.
const EnvRequire = "APQUEUE_REQUIRE_POSTGRES"

// MaxConnsDefault is the size of a test pool when Options.MaxConns is zero.
// It is small because many tests run in parallel against one server.
const MaxConnsDefault = 4

// Options adjusts the pool New returns. The zero value is valid.
type Options struct {
	// Mode is the pool's default query execution mode. Zero means pgx's
	// default, QueryExecModeCacheStatement.
	Mode pgx.QueryExecMode
	// MaxConns caps the pool's connections. Default: MaxConnsDefault.
	MaxConns int32
	// Through is the connection string of a pooler in front of the test
	// database (see PgBouncer): the pool connects through it, and the
	// schema is still created and dropped directly. Default: connect
	// directly.
	Through string
	// Settings are run-time parameters set on every connection, for
	// example plan_cache_mode. Default: none.
	Settings map[string]string
}

// DB is a test's database: a pool and the schema that belongs to the test.
type DB struct {
	// Pool is connected to the test database; it is closed when the test
	// ends.
	Pool *pgxpool.Pool
	// Schema is the name of a schema made for this test alone; it is
	// dropped, with everything in it, when the test ends. It is also the
	// application_name of the pool's connections.
	Schema string
	// ConnString is the connection string the pool was made from.
	ConnString string
}

// URL returns the test database's connection string, skipping (or failing,
// see EnvRequire) t when there is none.
func URL(t testing.TB) string {
	t.Helper()
	url := os.Getenv(EnvURL)
	if url != "" {
		return url
	}
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s is not set but %s=1: this test needs PostgreSQL", EnvURL, EnvRequire)
	}
	t.Skipf("%s is not set: skipping a test that needs PostgreSQL "+
		"(for example %s='postgres://postgres@127.0.0.1:5432/test?sslmode=disable')", EnvURL, EnvURL)
	return ""
}

// New returns a pool on the test database and a fresh schema name for t.
// The schema is created empty; it and the pool go away when t ends. opts may
// be nil.
func New(t testing.TB, opts *Options) *DB {
	t.Helper()
	url := URL(t)
	if opts == nil {
		opts = &Options{}
	}
	poolURL := url
	if opts.Through != "" {
		poolURL = opts.Through
	}
	cfg, err := pgxpool.ParseConfig(poolURL)
	if err != nil {
		t.Fatalf("pgtest: parse %s: %v", poolURL, err)
	}
	if opts.Mode != 0 {
		cfg.ConnConfig.DefaultQueryExecMode = opts.Mode
	}
	cfg.MaxConns = MaxConnsDefault
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	cfg.MinConns = 0
	for k, v := range opts.Settings {
		cfg.ConnConfig.RuntimeParams[k] = v
	}

	schema := "apqueue_test_" + randomHex(6)
	// Every connection made from this configuration (copies included) is
	// named after the schema, so a test can find and terminate them all.
	cfg.ConnConfig.RuntimeParams["application_name"] = schema
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		pool.Close()
		t.Fatalf("pgtest: create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		pool.Close()
		drop(t, url, schema)
	})
	return &DB{Pool: pool, Schema: schema, ConnString: url}
}

// drop removes schema on a connection of its own, after the test's pool is
// closed, ending any session still connected to it first.
func drop(t testing.TB, url, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Errorf("pgtest: connect to drop schema %s: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		t.Errorf("pgtest: drop schema %s: %v", schema, err)
	}
}

// TerminateConnections ends, on the server, every connection whose
// application_name is db.Schema (those of db.Pool and of any connection made
// from its configuration), as a server restart would, and returns how many
// it ended. It uses a connection of its own.
func (db *DB) TerminateConnections(ctx context.Context) (int, error) {
	conn, err := pgx.Connect(ctx, db.ConnString)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid()) AS t`, db.Schema).Scan(&n)
	return n, err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

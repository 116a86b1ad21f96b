package pgtest_test

import (
	"fmt"
	"net"
	"runtime"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/leakcheck"
	"github.com/apqueue/apqueue/internal/pgtest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// recorder is a testing.TB whose Skipf and Fatalf record and end the
// goroutine, as the real ones do.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func callURL(tb *recorder) string {
	done := make(chan string)
	go func() {
		url := ""
		defer func() { done <- url }()
		url = pgtest.URL(tb)
	}()
	return <-done
}

func TestURLWithoutDatabase(t *testing.T) {
	t.Setenv(pgtest.EnvURL, "")

	t.Setenv(pgtest.EnvRequire, "")
	r := &recorder{TB: t}
	require.Empty(t, callURL(r))
	require.Contains(t, r.skipped, pgtest.EnvURL+" is not set")
	require.Empty(t, r.failed)

	t.Setenv(pgtest.EnvRequire, "1")
	r = &recorder{TB: t}
	require.Empty(t, callURL(r))
	require.Contains(t, r.failed, pgtest.EnvRequire+"=1")
	require.Empty(t, r.skipped)
}

func TestNewGivesASchemaDroppedAtTheEnd(t *testing.T) {
	t.Parallel()
	var schema string
	t.Run("inner", func(t *testing.T) {
		db := pgtest.New(t, nil)
		schema = db.Schema
		_, err := db.Pool.Exec(t.Context(), "CREATE TABLE "+schema+".t (x int)")
		require.NoError(t, err)
		require.EqualValues(t, pgtest.MaxConnsDefault, db.Pool.Config().MaxConns)
	})
	db := pgtest.New(t, nil)
	require.NotEqual(t, schema, db.Schema)
	var exists bool
	require.NoError(t, db.Pool.QueryRow(t.Context(),
		"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists))
	require.False(t, exists, "the schema outlived its test")

	n, err := db.TerminateConnections(t.Context())
	require.NoError(t, err)
	require.Positive(t, n, "the pool's connections were not found by name")
}

func callPgBouncer(tb *recorder) string {
	done := make(chan string)
	go func() {
		conn := ""
		defer func() { done <- conn }()
		conn = pgtest.PgBouncer(tb)
	}()
	return <-done
}

// TestPgBouncerWithoutTheBinary hides pgbouncer: the test is skipped with a
// message saying how to install it, or fails when it is required.
func TestPgBouncerWithoutTheBinary(t *testing.T) {
	t.Setenv(pgtest.EnvURL, "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	t.Setenv("PATH", t.TempDir())
	defer pgtest.SetPgBouncerPaths(nil)()

	t.Setenv(pgtest.EnvRequirePgBouncer, "")
	r := &recorder{TB: t}
	require.Empty(t, callPgBouncer(r))
	require.Contains(t, r.skipped, "pgbouncer is not installed")
	require.Contains(t, r.skipped, "apt-get install pgbouncer")
	require.Empty(t, r.failed)

	t.Setenv(pgtest.EnvRequirePgBouncer, "1")
	r = &recorder{TB: t}
	require.Empty(t, callPgBouncer(r))
	require.Contains(t, r.failed, pgtest.EnvRequirePgBouncer+"=1")
	require.Empty(t, r.skipped)
}

// TestPgBouncerOnATakenPort gives pgbouncer a port another socket holds
// first, as when another process takes the free port before it listens:
// it exits, and PgBouncer starts it again on another port.
func TestPgBouncerOnATakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	requirePgBouncerElsewhere(t, taken.Addr().(*net.TCPAddr).Port)
}

// TestPgBouncerOnAnotherPgBouncersPort gives pgbouncer the port of a
// pgbouncer already running, as when another test's took the free port
// first: the new one exits, and PgBouncer must not mistake the running one,
// which answers but goes away with its test, for its own.
func TestPgBouncerOnAnotherPgBouncersPort(t *testing.T) {
	first, err := pgx.ParseConfig(pgtest.PgBouncer(t))
	require.NoError(t, err)
	requirePgBouncerElsewhere(t, int(first.Port))
}

// requirePgBouncerElsewhere starts a pgbouncer whose first port is taken:
// PgBouncer must start it again on another, and return a connection
// string that reaches the database through it.
func requirePgBouncerElsewhere(t *testing.T, taken int) {
	t.Helper()
	picked := 0
	defer pgtest.SetPickPort(func(tb testing.TB) int {
		picked++
		if picked == 1 {
			return taken
		}
		free, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(tb, err)
		defer free.Close()
		return free.Addr().(*net.TCPAddr).Port
	})()

	conn := pgtest.PgBouncer(t)
	require.Equal(t, 2, picked)
	require.NotContains(t, conn, fmt.Sprintf(":%d/", taken))
	db := pgtest.New(t, &pgtest.Options{Through: conn, Mode: pgx.QueryExecModeSimpleProtocol})
	var one int
	require.NoError(t, db.Pool.QueryRow(t.Context(), "SELECT 1").Scan(&one))
}

// TestPgBouncer starts a pgBouncer, talks to the database through it, and
// asks its admin console for its pooling mode.
func TestPgBouncer(t *testing.T) {
	t.Parallel()
	conn := pgtest.PgBouncer(t)
	db := pgtest.New(t, &pgtest.Options{Through: conn, Mode: pgx.QueryExecModeSimpleProtocol})
	var one int
	require.NoError(t, db.Pool.QueryRow(t.Context(), "SELECT 1").Scan(&one))

	cfg, err := pgx.ParseConfig(conn)
	require.NoError(t, err)
	cfg.Database = "pgbouncer"
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	admin, err := pgx.ConnectConfig(t.Context(), cfg)
	require.NoError(t, err)
	defer admin.Close(t.Context())
	rows, err := admin.Query(t.Context(), "SHOW CONFIG")
	require.NoError(t, err)
	mode := ""
	for rows.Next() {
		vals, err := rows.Values()
		require.NoError(t, err)
		if vals[0] == "pool_mode" {
			mode, _ = vals[1].(string)
		}
	}
	require.NoError(t, rows.Err())
	require.Equal(t, "transaction", mode)
}

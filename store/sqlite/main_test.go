package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite" // the test driver; the store takes any

	"github.com/apqueue/apqueue/internal/leakcheck"
	"github.com/apqueue/apqueue/internal/queuetest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/sqlite"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// settings are the connection settings the store needs, in
// modernc.org/sqlite's DSN syntax, and IMMEDIATE transactions for the
// callers' transactions of the tests.
const settings = "_pragma=busy_timeout(5000)&_pragma=synchronous(full)&_txlock=immediate"

// dsn returns the DSN of the database file path with settings and extra
// (more DSN parameters, or "").
func dsn(path, extra string) string {
	d := "file:" + path + "?" + settings
	if extra != "" {
		d += "&" + extra
	}
	return d
}

// openDB opens the database at dsn and closes it when the test ends.
func openDB(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// tempPath returns the path of a database file in a directory of t's own.
func tempPath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "apqueue.db")
}

// newStore returns a migrated store on a new database file, and the file's
// path.
func newStore(t testing.TB, cfg *sqlite.Config) (*sqlite.Store, string) {
	t.Helper()
	path := tempPath(t)
	return storeOn(t, openDB(t, dsn(path, "")), cfg), path
}

// storeOn returns a migrated store on db.
func storeOn(t testing.TB, db *sql.DB, cfg *sqlite.Config) *sqlite.Store {
	t.Helper()
	c := sqlite.Config{Logger: queuetest.QuietLogger()}
	if cfg != nil {
		c = *cfg
	}
	s, err := sqlite.New(db, &c)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	_, err = s.Migrate(t.Context())
	require.NoError(t, err)
	return s
}

func itoa(n int) string { return strconv.Itoa(n) }

// appendedIDs returns the IDs of what Append returned, and its error.
func appendedIDs(res []store.Appended, err error) ([]int64, error) {
	return store.AppendedIDs(res), err
}

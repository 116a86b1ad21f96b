package postgres_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/leakcheck"
	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/postgres"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// modes are the query execution modes the store must work in: pgx's
// default, and the two that work through pgBouncer in transaction mode.
var modes = []struct {
	name string
	mode pgx.QueryExecMode
}{
	{"cache_statement", pgx.QueryExecModeCacheStatement},
	{"exec", pgx.QueryExecModeExec},
	{"simple_protocol", pgx.QueryExecModeSimpleProtocol},
}

// newStore returns a migrated store in a schema of t's own, on a pool in
// the given mode (zero: pgx's default).
func newStore(t testing.TB, mode pgx.QueryExecMode, cfg *postgres.Config) (*postgres.Store, *pgtest.DB) {
	t.Helper()
	return newStoreOn(t, pgtest.New(t, &pgtest.Options{Mode: mode}), cfg)
}

// newStoreWith returns a migrated store on a pool made with opts.
func newStoreWith(t testing.TB, opts pgtest.Options) (*postgres.Store, *pgtest.DB) {
	t.Helper()
	return newStoreOn(t, pgtest.New(t, &opts), nil)
}

// newStoreOn returns a migrated store in db's schema.
func newStoreOn(t testing.TB, db *pgtest.DB, cfg *postgres.Config) (*postgres.Store, *pgtest.DB) {
	t.Helper()
	var c postgres.Config
	if cfg != nil {
		c = *cfg
	}
	c.Schema = db.Schema
	s, err := postgres.New(db.Pool, &c)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	_, err = s.Migrate(t.Context())
	require.NoError(t, err)
	return s, db
}

// appendedIDs returns the IDs of what Append returned, and its error.
func appendedIDs(res []store.Appended, err error) ([]int64, error) {
	return store.AppendedIDs(res), err
}

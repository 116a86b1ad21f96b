package postgres_test

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTableSizes(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, nil)
	ctx := t.Context()
	for range 3 {
		appendOne(t, s, "a.example")
	}
	_, err := db.Pool.Exec(ctx, "ANALYZE "+db.Schema+".activities")
	require.NoError(t, err)
	sizes, err := s.TableSizes(ctx)
	require.NoError(t, err)
	byName := make(map[string]int64)
	for _, ts := range sizes {
		byName[ts.Table] = ts.Rows
		if ts.Table == "activities" {
			require.Positive(t, ts.Bytes)
		}
	}
	for _, table := range []string{"activities", "staged_activities", "domains", "dead_letters", "schema_migrations"} {
		require.Contains(t, byName, table)
	}
	require.Equal(t, int64(3), byName["activities"])
}

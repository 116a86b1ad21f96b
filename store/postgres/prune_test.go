package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// A dead domain revived while Prune runs must not be left below the prune
// point: its backlog would be deleted without a report.
func TestPruneWaitsForARevivalInProgress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db := newStore(t, 0, nil)
	require.NoError(t, s.RegisterDomains(ctx, []store.DomainRegistration{{Domain: "live.example"}, {Domain: "dead.example"}}))
	batch := make([]store.NewActivity, 10)
	for i := range batch {
		batch[i] = store.NewActivity{Actor: "https://local.example/u", OrderingKey: "k", Body: []byte(`{}`), AllDomains: true}
	}
	_, err := s.Append(ctx, batch)
	require.NoError(t, err)
	_, err = s.ChangeDomain(ctx, "live.example", store.DomainChange{SkipTo: 10})
	require.NoError(t, err)
	_, err = s.ChangeDomain(ctx, "dead.example", store.DomainChange{Status: store.StatusDead})
	require.NoError(t, err)

	// A revival (an admin's MarkAlive, or an owner's checkpoint after a
	// successful probe), not committed yet.
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "UPDATE "+pgx.Identifier{db.Schema}.Sanitize()+".domains SET status = 'active', revision = revision + 1 WHERE domain = 'dead.example'")
	require.NoError(t, err)

	type result struct {
		res store.PruneResult
		err error
	}
	done := make(chan result, 1)
	go func() { r, err := s.Prune(ctx); done <- result{r, err} }()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE %domains%'`).Scan(&n))
		return n > 0
	}, 5*time.Second, 10*time.Millisecond, "prune did not wait for the open revival")
	require.NoError(t, tx.Commit(ctx))
	r := <-done
	require.NoError(t, r.err)

	ds, err := s.Domains(ctx, []string{"dead.example"})
	require.NoError(t, err)
	require.Equal(t, store.StatusActive, ds[0].Status)
	require.LessOrEqual(t, r.res.Below, ds[0].Cursor, "a live domain was left below the prune point")
	acts, err := s.Activities(ctx, ds[0].Cursor, 100)
	require.NoError(t, err)
	require.Len(t, acts, 10, "the revived domain's backlog is kept")
}

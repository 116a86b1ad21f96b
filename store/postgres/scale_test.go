package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/internal/queuetest"
	"github.com/apqueue/apqueue/store"
)

const scaleDomains = queuetest.ScaleDomains

// TestStatementsStayLinearWithManyDomainsUnderGenericPlans runs every
// statement whose size grows with the number of domains on 20,000 of them,
// with PostgreSQL forced to the generic plans it switches prepared
// statements to (planned for 10 array elements). A statement with a join
// that is quadratic under such a plan takes minutes here (the checkpoint of
// 20,000 states once took 1.5 minutes, and every lease expired behind it);
// linear ones take well under a second each, so the generous bound of each
// step (30 s) only fails on that kind of plan.
func TestStatementsStayLinearWithManyDomainsUnderGenericPlans(t *testing.T) {
	t.Parallel()
	s, db := newStoreWith(t, pgtest.Options{Settings: map[string]string{"plan_cache_mode": "force_generic_plan"}})
	step := func(name string, f func(ctx context.Context) error) {
		t.Helper()
		queuetest.Timed(t, fmt.Sprintf("%s, %d domains", name, scaleDomains), f)
	}

	regs, names := queuetest.ScaleRegistrations(scaleDomains)
	step("RegisterDomains", func(ctx context.Context) error { return s.RegisterDomains(ctx, regs) })
	ids := make([]int64, 0, 3)
	for range 3 {
		ids = append(ids, appendOne(t, s, names[0]))
	}

	var held []store.DomainState
	step("AcquireLeases", func(ctx context.Context) (err error) {
		held, err = s.AcquireLeases(ctx, "owner-a", time.Hour, scaleDomains)
		return err
	})
	require.Len(t, held, scaleDomains)

	for round := range 2 {
		for i := range held {
			held[i].Cursor = ids[round]
			held[i].FailCount = round
		}
		step("Checkpoint", func(ctx context.Context) error { return s.Checkpoint(ctx, held, nil) })
	}
	leases := make([]store.Lease, len(held))
	for i, st := range held {
		leases[i] = st.Lease()
		leases[i].SettledThrough = ids[2]
	}
	var renewed []store.Lease
	step("RenewLeases", func(ctx context.Context) (err error) {
		renewed, err = s.RenewLeases(ctx, "owner-a", leases, time.Hour)
		return err
	})
	require.Len(t, renewed, scaleDomains)
	step("RenewLeases again, nothing settled", func(ctx context.Context) (err error) {
		renewed, err = s.RenewLeases(ctx, "owner-a", leases, time.Hour)
		return err
	})
	require.Len(t, renewed, scaleDomains)
	step("RenewLeases of half, the rest left out", func(ctx context.Context) (err error) {
		renewed, err = s.RenewLeases(ctx, "owner-a", leases[:scaleDomains/2], time.Hour)
		return err
	})
	require.Len(t, renewed, scaleDomains/2)
	var kept store.LeaseKept
	step("KeepLeases, the whole list", func(ctx context.Context) (err error) {
		kept, err = s.KeepLeases(ctx, "owner-a", store.LeaseKeep{Full: true, Leases: leases}, time.Hour)
		return err
	})
	require.Len(t, kept.Leases, scaleDomains)
	step("KeepLeases, nothing listed", func(ctx context.Context) (err error) {
		kept, err = s.KeepLeases(ctx, "owner-a", store.LeaseKeep{Since: kept.Mark}, time.Hour)
		return err
	})
	require.False(t, kept.Changed)
	require.Empty(t, kept.Leases)
	var states []store.DomainState
	step("Domains", func(ctx context.Context) (err error) {
		states, err = s.Domains(ctx, names)
		return err
	})
	require.Len(t, states, scaleDomains)
	for _, st := range states {
		require.Equal(t, ids[2], st.Cursor, st.Domain)
		require.Equal(t, 1, st.FailCount, st.Domain)
	}
	// owner-a dies: another owner takes its 20,000 domains over, which
	// moves owner-a's change mark once, not once per domain.
	_, err := db.Pool.Exec(t.Context(), `DELETE FROM `+pgx.Identifier{db.Schema, "owners"}.Sanitize()+` WHERE owner = 'owner-a'`)
	require.NoError(t, err)
	step("AcquireLeases of a dead owner's domains", func(ctx context.Context) (err error) {
		held, err = s.AcquireLeases(ctx, "owner-b", time.Hour, scaleDomains)
		return err
	})
	require.Len(t, held, scaleDomains)
	step("KeepLeases of the dead owner, nothing listed", func(ctx context.Context) (err error) {
		kept, err = s.KeepLeases(ctx, "owner-a", store.LeaseKeep{Since: kept.Mark}, time.Hour)
		return err
	})
	require.True(t, kept.Changed, "owner-a was not told that its leases were taken")
	step("ReleaseLeases", func(ctx context.Context) error { return s.ReleaseLeases(ctx, "owner-b", leasesOf(held)) })
	step("LeaseStats", func(ctx context.Context) error {
		ls, err := s.LeaseStats(ctx)
		if err == nil && ls.Domains != scaleDomains {
			err = fmt.Errorf("%d domains counted", ls.Domains)
		}
		return err
	})

	// A big account's post reaches 2,000 domains, half of them never seen
	// (registered with it), by Append and in a caller's transaction
	// (registered when a reader numbers it).
	wide := func(from int) []string {
		doms := append([]string(nil), names[:bigAudience/2]...)
		for i := range bigAudience / 2 {
			doms = append(doms, fmt.Sprintf("new%05d.example", from+i))
		}
		return doms
	}
	step("Append of an activity to 2,000 domains", func(ctx context.Context) error {
		_, err := s.Append(ctx, []store.NewActivity{newActivity(wide(0)...)})
		return err
	})
	step("AppendTx of an activity to 2,000 domains", func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			return s.AppendTx(ctx, tx, []store.NewActivity{newActivity(wide(bigAudience)...)})
		})
	})
	var read []store.Activity
	step("Activities, until the transaction's is numbered", func(ctx context.Context) (err error) {
		// A read numbers staged activities unless another statement (the
		// commit watcher's) holds the counter: then it does, soon.
		for {
			if read, err = s.Activities(ctx, ids[2], 10); err != nil || len(read) == 2 {
				return err
			}
			time.Sleep(time.Millisecond)
		}
	})
	require.Len(t, read, 2)
	for _, a := range read {
		require.Equal(t, bigAudience, len(a.Domains), "domains of activity %d", a.ID)
	}
	states, err = s.Domains(t.Context(), append(wide(0), wide(bigAudience)...))
	require.NoError(t, err)
	require.Len(t, states, bigAudience/2+bigAudience, "the known half and the 2,000 new domains")
	step("Prune", func(ctx context.Context) error { _, err := s.Prune(ctx); return err })
}

// bigAudience is how many domains a big account's post reaches.
const bigAudience = 2000

package sqlite_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/queuetest"
	"github.com/apqueue/apqueue/store"
)

const scaleDomains = queuetest.ScaleDomains

// TestStatementsWorkOnManyDomains runs every call whose size grows with the
// number of domains on 20,000 of them, more rows than one statement may
// bind parameters for: each is split into statements that fit. The log
// shows what each costs (an idle renewal, KeepLeases listing nothing, well
// under a millisecond).
//
// It is not run under the race detector: its statements run one at a time
// on one connection, and the detector makes them take 4 minutes instead of
// 9 s, close to the package's time limit. The runs without it cover it.
func TestStatementsWorkOnManyDomains(t *testing.T) {
	if queuetest.RaceDetector {
		t.Skip("20,000 domains take 4 minutes in SQLite under the race detector; the tests without -race run this one")
	}
	t.Parallel()
	s, _ := newStore(t, nil)
	step := func(name string, f func(ctx context.Context) error) {
		t.Helper()
		queuetest.Timed(t, fmt.Sprintf("%s, %d domains", name, scaleDomains), f)
	}
	regs, names := queuetest.ScaleRegistrations(scaleDomains)
	step("RegisterDomains", func(ctx context.Context) error { return s.RegisterDomains(ctx, regs) })
	ids, err := appendedIDs(s.Append(t.Context(), []store.NewActivity{{Body: []byte(`{"n":1}`), Domains: names[:1]}}))
	require.NoError(t, err)

	var held []store.DomainState
	step("AcquireLeases", func(ctx context.Context) (err error) {
		held, err = s.AcquireLeases(ctx, "owner-a", time.Hour, scaleDomains)
		return err
	})
	require.Len(t, held, scaleDomains)
	leases := make([]store.Lease, len(held))
	for i, st := range held {
		leases[i] = st.Lease()
		leases[i].SettledThrough = ids[0]
	}
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
	var renewed []store.Lease
	step("RenewLeases", func(ctx context.Context) (err error) {
		renewed, err = s.RenewLeases(ctx, "owner-a", leases, time.Hour)
		return err
	})
	require.Len(t, renewed, scaleDomains)
	step("Checkpoint", func(ctx context.Context) error { return s.Checkpoint(ctx, held, nil) })
	var states []store.DomainState
	step("Domains", func(ctx context.Context) (err error) {
		states, err = s.Domains(ctx, names)
		return err
	})
	require.Len(t, states, scaleDomains)
	for _, st := range states {
		require.Equal(t, ids[0], st.Cursor, st.Domain)
	}
	step("ReleaseLeases", func(ctx context.Context) error { return s.ReleaseLeases(ctx, "owner-a", leases) })
}

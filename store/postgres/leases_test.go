package postgres_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// TestRenewalWritesOnlyWhatChanged checks what makes an idle process cheap
// for the database: once its leases follow it, renewing them writes the
// owner's row and the domain rows whose cursor rises, not one row per
// domain.
func TestRenewalWritesOnlyWhatChanged(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, pgx.QueryExecModeCacheStatement, nil)
	ctx := t.Context()
	const n = 200
	regs := make([]store.DomainRegistration, n)
	for i := range regs {
		regs[i] = store.DomainRegistration{Domain: fmt.Sprintf("d%03d.example", i)}
	}
	require.NoError(t, s.RegisterDomains(ctx, regs))
	held, err := s.AcquireLeases(ctx, "owner-a", time.Minute, n)
	require.NoError(t, err)
	require.Len(t, held, n)
	leases := make([]store.Lease, n)
	for i, st := range held {
		leases[i] = st.Lease()
	}
	// The first renewal makes the leases follow their owner: that writes
	// every row once.
	_, err = s.RenewLeases(ctx, "owner-a", leases, time.Minute)
	require.NoError(t, err)

	versions := func() map[string]string {
		rows, err := db.Pool.Query(ctx, `SELECT domain, xmin::text FROM `+pgx.Identifier{db.Schema, "domains"}.Sanitize())
		require.NoError(t, err)
		out := make(map[string]string)
		for rows.Next() {
			var d, x string
			require.NoError(t, rows.Scan(&d, &x))
			out[d] = x
		}
		require.NoError(t, rows.Err())
		return out
	}
	before := versions()
	ownerVersion := func() string {
		var x string
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT xmin::text FROM `+pgx.Identifier{db.Schema, "owners"}.Sanitize()+` WHERE owner = 'owner-a'`).Scan(&x))
		return x
	}
	ownerBefore := ownerVersion()

	id := appendOne(t, s, "d000.example")
	leases[7].SettledThrough = id
	renewed, err := s.RenewLeases(ctx, "owner-a", leases, time.Minute)
	require.NoError(t, err)
	require.Len(t, renewed, n)
	for _, l := range renewed {
		require.True(t, l.ExpiresAt.After(time.Now().Add(30*time.Second)), "renewed lease of %s expires at %v", l.Domain, l.ExpiresAt)
	}
	after := versions()
	var written []string
	for d, x := range after {
		if before[d] != x {
			written = append(written, d)
		}
	}
	require.Equal(t, []string{leases[7].Domain}, written, "an idle renewal rewrote domain rows")
	require.NotEqual(t, ownerBefore, ownerVersion(), "the renewal did not write the owner's row")

	// What Domains reports as the lease's expiry is the owner's.
	states, err := s.Domains(ctx, []string{leases[3].Domain})
	require.NoError(t, err)
	require.Len(t, states, 1)
	require.WithinDuration(t, renewed[0].ExpiresAt, states[0].LeaseExpiresAt, time.Millisecond)
}

// TestLeasesFollowingADeadOwnerAreTakenOver checks that a lease that
// follows its owner ends with it: when the owner stops renewing, another
// owner takes every domain over.
func TestLeasesFollowingADeadOwnerAreTakenOver(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, pgx.QueryExecModeCacheStatement, nil)
	ctx := t.Context()
	require.NoError(t, s.RegisterDomains(ctx, []store.DomainRegistration{{Domain: "a.example"}, {Domain: "b.example"}}))
	const ttl = time.Second // longer than a stall between two calls
	held, err := s.AcquireLeases(ctx, "owner-a", ttl, 2)
	require.NoError(t, err)
	require.Len(t, held, 2)
	leases := []store.Lease{held[0].Lease(), held[1].Lease()}
	renewed, err := s.RenewLeases(ctx, "owner-a", leases, ttl)
	require.NoError(t, err)
	require.Len(t, renewed, 2)
	got, err := s.AcquireLeases(ctx, "owner-b", time.Minute, 2)
	require.NoError(t, err)
	require.Empty(t, got, "a live owner's leases were taken over")

	var b []store.DomainState
	require.Eventually(t, func() bool {
		got, err := s.AcquireLeases(ctx, "owner-b", time.Minute, 2)
		require.NoError(t, err)
		b = append(b, got...)
		return len(b) == 2
	}, 10*time.Second, 20*time.Millisecond, "leases of an owner that stopped renewing were not taken over")
	for _, st := range b {
		require.Greater(t, st.LeaseToken, held[0].LeaseToken-1)
	}
	// The old owner's late renewal gets nothing back.
	late, err := s.RenewLeases(ctx, "owner-a", leases, ttl)
	require.NoError(t, err)
	require.Empty(t, late)
}

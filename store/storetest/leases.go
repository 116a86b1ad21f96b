package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// testLeases checks acquiring, renewing and releasing leases, their expiry,
// and the fencing tokens that make a taken-over lease detectable.
func testLeases(t *testing.T, su suite) {
	su.run(t, "Acquire", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example", "b.example")
		before := time.Now()
		got, err := s.AcquireLeases(ctx, "owner-a", longTTL, 10)
		after := time.Now()
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"a.example", "b.example"}, names(got))
		for _, st := range got {
			require.Equal(t, "owner-a", st.Owner)
			require.Positive(t, st.LeaseToken)
			requireNear(t, before.Add(longTTL), after.Add(longTTL), st.LeaseExpiresAt, "LeaseExpiresAt")
			require.Equal(t, store.StatusActive, st.Status)

			saved := domainState(t, s, st.Domain)
			require.Equal(t, "owner-a", saved.Owner)
			require.Equal(t, st.LeaseToken, saved.LeaseToken)
			requireTimeEqual(t, st.LeaseExpiresAt, saved.LeaseExpiresAt, "saved LeaseExpiresAt")
		}

		// Held leases are not acquired again, by anyone.
		again, err := s.AcquireLeases(ctx, "owner-a", longTTL, 10)
		require.NoError(t, err)
		require.Empty(t, again)
		other, err := s.AcquireLeases(ctx, "owner-b", longTTL, 10)
		require.NoError(t, err)
		require.Empty(t, other, "a held lease was given to another owner")
	})

	su.run(t, "AcquireRespectsLimit", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example", "b.example", "c.example", "d.example", "e.example")
		first, err := s.AcquireLeases(ctx, "owner-a", longTTL, 2)
		require.NoError(t, err)
		require.Len(t, first, 2)
		none, err := s.AcquireLeases(ctx, "owner-b", longTTL, 0)
		require.NoError(t, err)
		require.Empty(t, none, "limit 0 acquired leases")
		rest, err := s.AcquireLeases(ctx, "owner-b", longTTL, 10)
		require.NoError(t, err)
		require.Len(t, rest, 3)
		require.ElementsMatch(t,
			[]string{"a.example", "b.example", "c.example", "d.example", "e.example"},
			append(names(first), names(rest)...))
	})

	su.run(t, "AcquirePrefersLowestCursor", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "z-behind.example")
		appendN(t, s, 2)
		register(t, s, "a-middle.example")
		appendN(t, s, 2)
		register(t, s, "m-ahead.example")
		for _, want := range []string{"z-behind.example", "a-middle.example", "m-ahead.example"} {
			got, err := s.AcquireLeases(ctx, "owner-a", longTTL, 1)
			require.NoError(t, err)
			require.Equal(t, []string{want}, names(got))
		}
	})

	su.run(t, "TokensIncrease", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example")
		last := domainState(t, s, "a.example").LeaseToken
		for _, owner := range []string{"owner-a", "owner-b", "owner-a"} {
			got, err := s.AcquireLeases(ctx, owner, longTTL, 1)
			require.NoError(t, err)
			require.Len(t, got, 1)
			require.Greater(t, got[0].LeaseToken, last, "acquisition by %s did not increase the token", owner)
			last = got[0].LeaseToken
			require.NoError(t, s.ReleaseLeases(ctx, owner, leasesOf(got)))
		}
	})

	su.run(t, "ExpiredLeaseIsTakenOver", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example")
		a, err := s.AcquireLeases(ctx, "owner-a", shortTTL, 1)
		require.NoError(t, err)
		require.Len(t, a, 1)
		expires := a[0].LeaseExpiresAt

		var b []store.DomainState
		require.Eventually(t, func() bool {
			b, err = s.AcquireLeases(ctx, "owner-b", longTTL, 1)
			require.NoError(t, err)
			if len(b) > 0 {
				// Taken over no earlier than the lease's expiry.
				require.False(t, time.Now().Before(expires.Add(-100*time.Millisecond)),
					"lease expiring at %v taken over at %v", expires, time.Now())
			}
			return len(b) > 0
		}, waitFor, tick, "an expired lease was not taken over")
		require.Equal(t, "owner-b", b[0].Owner)
		require.Greater(t, b[0].LeaseToken, a[0].LeaseToken)
		require.Equal(t, "owner-b", domainState(t, s, "a.example").Owner)
	})

	su.run(t, "Renew", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example", "b.example")
		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 10)
		require.NoError(t, err)
		require.Len(t, held, 2)

		before := time.Now()
		renewed, err := s.RenewLeases(ctx, "owner-a", leasesOf(held), 2*longTTL)
		after := time.Now()
		require.NoError(t, err)
		require.Len(t, renewed, 2)
		tokens := byDomain(held)
		for _, l := range renewed {
			require.Equal(t, tokens[l.Domain].LeaseToken, l.Token, "renewal changed the token")
			requireNear(t, before.Add(2*longTTL), after.Add(2*longTTL), l.ExpiresAt, "renewed ExpiresAt")
			saved := domainState(t, s, l.Domain)
			requireTimeEqual(t, l.ExpiresAt, saved.LeaseExpiresAt, "saved renewed expiry")
			require.Equal(t, "owner-a", saved.Owner)
		}

		// Leases the owner does not hold with that token are left out.
		stale := held[0].Lease()
		stale.Token--
		got, err := s.RenewLeases(ctx, "owner-a", []store.Lease{stale, {Domain: "unknown.example", Token: 1}}, longTTL)
		require.NoError(t, err)
		require.Empty(t, got)
		got, err = s.RenewLeases(ctx, "owner-b", leasesOf(held), longTTL)
		require.NoError(t, err)
		require.Empty(t, got, "another owner renewed owner-a's leases")
		require.Equal(t, "owner-a", domainState(t, s, held[0].Domain).Owner)
	})

	su.run(t, "RenewRaisesSettledCursors", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "idle.example", "busy.example", "lost.example")
		ids := appendN(t, s, 6)
		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 10)
		require.NoError(t, err)
		require.Len(t, held, 3)
		byName := byDomain(held)
		busy := byName["busy.example"]
		busy.Cursor = ids[4]
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{busy}, nil))

		idle := byName["idle.example"].Lease()
		idle.SettledThrough = ids[5]
		behind := byName["busy.example"].Lease()
		behind.SettledThrough = ids[1] // below the saved cursor: never lowers it
		lost := byName["lost.example"].Lease()
		lost.Token++ // not this owner's token: no renewal, no cursor move
		lost.SettledThrough = ids[5]
		renewed, err := s.RenewLeases(ctx, "owner-a", []store.Lease{idle, behind, lost}, longTTL)
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"idle.example", "busy.example"}, leaseNames(renewed))
		require.Equal(t, ids[5], domainState(t, s, "idle.example").Cursor, "an idle domain's cursor follows SettledThrough")
		require.Equal(t, ids[4], domainState(t, s, "busy.example").Cursor, "a renewal lowered a cursor")
		require.Equal(t, byName["lost.example"].Cursor, domainState(t, s, "lost.example").Cursor, "a refused renewal moved a cursor")
	})

	su.run(t, "RenewOmitsLostLeases", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "kept.example")
		appendN(t, s, 1)
		register(t, s, "lost.example")
		kept, err := s.AcquireLeases(ctx, "owner-a", longTTL, 1)
		require.NoError(t, err)
		require.Equal(t, []string{"kept.example"}, names(kept))
		lost, err := s.AcquireLeases(ctx, "owner-a", shortTTL, 1)
		require.NoError(t, err)
		require.Equal(t, []string{"lost.example"}, names(lost))
		require.Eventually(t, func() bool {
			b, err := s.AcquireLeases(ctx, "owner-b", longTTL, 1)
			require.NoError(t, err)
			return len(b) == 1
		}, waitFor, tick)

		renewed, err := s.RenewLeases(ctx, "owner-a", leasesOf(append(kept, lost...)), longTTL)
		require.NoError(t, err)
		require.Len(t, renewed, 1)
		require.Equal(t, "kept.example", renewed[0].Domain)
		require.Equal(t, "owner-b", domainState(t, s, "lost.example").Owner, "renewal took back a lost lease")
	})

	su.run(t, "RenewExpiredButNotTakenOver", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example")
		held, err := s.AcquireLeases(ctx, "owner-a", shortTTL, 1)
		require.NoError(t, err)
		require.Len(t, held, 1)
		require.Eventually(t, func() bool {
			st, err := s.LeaseStats(ctx)
			require.NoError(t, err)
			return st.Owners == 0
		}, waitFor, tick, "the lease did not expire")

		renewed, err := s.RenewLeases(ctx, "owner-a", leasesOf(held), longTTL)
		require.NoError(t, err)
		require.Len(t, renewed, 1, "an expired lease nobody took over was not renewed")
		require.Equal(t, held[0].LeaseToken, renewed[0].Token)
		require.True(t, renewed[0].ExpiresAt.After(time.Now().Add(longTTL/2)))
		b, err := s.AcquireLeases(ctx, "owner-b", longTTL, 1)
		require.NoError(t, err)
		require.Empty(t, b, "a renewed lease was taken over")
	})

	su.run(t, "Release", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example")
		a, err := s.AcquireLeases(ctx, "owner-a", longTTL, 1)
		require.NoError(t, err)
		require.Len(t, a, 1)

		// Another owner cannot release it.
		require.NoError(t, s.ReleaseLeases(ctx, "owner-b", leasesOf(a)))
		b, err := s.AcquireLeases(ctx, "owner-b", longTTL, 1)
		require.NoError(t, err)
		require.Empty(t, b, "a lease released by a non-owner was acquired")

		require.NoError(t, s.ReleaseLeases(ctx, "owner-a", leasesOf(a)))
		require.Empty(t, domainState(t, s, "a.example").Owner)
		b, err = s.AcquireLeases(ctx, "owner-b", longTTL, 1)
		require.NoError(t, err)
		require.Len(t, b, 1, "a released lease was not acquired at once")
		require.Greater(t, b[0].LeaseToken, a[0].LeaseToken)

		// Releasing a lost lease is ignored.
		require.NoError(t, s.ReleaseLeases(ctx, "owner-a", leasesOf(a)))
		require.Equal(t, "owner-b", domainState(t, s, "a.example").Owner)
		require.NoError(t, s.ReleaseLeases(ctx, "owner-a", []store.Lease{{Domain: "unknown.example", Token: 1}}))
	})

	su.run(t, "Stats", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		st, err := s.LeaseStats(ctx)
		require.NoError(t, err)
		require.Equal(t, store.LeaseStats{}, st)

		register(t, s, "a.example", "b.example", "c.example", "d.example")
		a, err := s.AcquireLeases(ctx, "owner-a", longTTL, 2)
		require.NoError(t, err)
		require.Len(t, a, 2)
		_, err = s.AcquireLeases(ctx, "owner-b", longTTL, 1)
		require.NoError(t, err)
		st, err = s.LeaseStats(ctx)
		require.NoError(t, err)
		require.Equal(t, store.LeaseStats{Domains: 4, Owners: 2}, st)

		require.NoError(t, s.ReleaseLeases(ctx, "owner-a", leasesOf(a)))
		st, err = s.LeaseStats(ctx)
		require.NoError(t, err)
		require.Equal(t, store.LeaseStats{Domains: 4, Owners: 1}, st)

		// An expired lease does not count.
		_, err = s.AcquireLeases(ctx, "owner-c", shortTTL, 1)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			st, err := s.LeaseStats(ctx)
			require.NoError(t, err)
			return st == store.LeaseStats{Domains: 4, Owners: 1}
		}, waitFor, tick)
	})

	su.run(t, "StatsCountOwnersThatHoldNothingYet", func(t *testing.T, s store.Store) {
		// A process that just started holds no lease, but must be counted so
		// that the others shed part of their domains for it.
		ctx := t.Context()
		register(t, s, "a.example", "b.example")
		a, err := s.AcquireLeases(ctx, "owner-a", longTTL, 2)
		require.NoError(t, err)
		require.Len(t, a, 2)
		b, err := s.AcquireLeases(ctx, "owner-b", longTTL, 1)
		require.NoError(t, err)
		require.Empty(t, b)
		st, err := s.LeaseStats(ctx)
		require.NoError(t, err)
		require.Equal(t, store.LeaseStats{Domains: 2, Owners: 2}, st, "an owner asking for leases is live")

		require.NoError(t, s.ReleaseLeases(ctx, "owner-b", nil))
		st, err = s.LeaseStats(ctx)
		require.NoError(t, err)
		require.Equal(t, store.LeaseStats{Domains: 2, Owners: 1}, st, "releasing ends an owner's liveness")

		_, err = s.RenewLeases(ctx, "owner-c", nil, shortTTL)
		require.NoError(t, err)
		st, err = s.LeaseStats(ctx)
		require.NoError(t, err)
		require.Equal(t, 2, st.Owners, "an owner renewing is live")
		require.Eventually(t, func() bool {
			st, err := s.LeaseStats(ctx)
			require.NoError(t, err)
			return st.Owners == 1
		}, waitFor, tick, "liveness without leases ends after the ttl")
	})

	su.run(t, "PartialReleaseKeepsOwnerLive", func(t *testing.T, s store.Store) {
		// A process shedding part of its domains to another stays counted,
		// or the others would take more than their share.
		ctx := t.Context()
		register(t, s, "a.example", "b.example", "c.example")
		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 3)
		require.NoError(t, err)
		require.Len(t, held, 3)
		renewed, err := s.RenewLeases(ctx, "owner-a", leasesOf(held), longTTL)
		require.NoError(t, err)
		require.Len(t, renewed, 3)
		byName := byDomain(held)
		require.NoError(t, s.ReleaseLeases(ctx, "owner-a", []store.Lease{byName["a.example"].Lease()}))
		b, err := s.AcquireLeases(ctx, "owner-b", longTTL, 3)
		require.NoError(t, err)
		require.Equal(t, []string{"a.example"}, names(b), "only the released lease is free")
		st, err := s.LeaseStats(ctx)
		require.NoError(t, err)
		require.Equal(t, store.LeaseStats{Domains: 3, Owners: 2}, st, "an owner that released part of its leases is still live")

		kept, err := s.RenewLeases(ctx, "owner-a", []store.Lease{byName["b.example"].Lease(), byName["c.example"].Lease()}, longTTL)
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"b.example", "c.example"}, leaseNames(kept))
		require.NoError(t, s.ReleaseLeases(ctx, "owner-a", kept))
		st, err = s.LeaseStats(ctx)
		require.NoError(t, err)
		require.Equal(t, store.LeaseStats{Domains: 3, Owners: 1}, st, "an owner that released its last leases is no longer live")
	})

	su.run(t, "UnrenewedLeaseExpires", func(t *testing.T, s store.Store) {
		// An owner that stops renewing one domain but goes on renewing the
		// others loses that one within the ttl.
		ctx := t.Context()
		register(t, s, "kept.example", "dropped.example")
		held, err := s.AcquireLeases(ctx, "owner-a", shortTTL, 2)
		require.NoError(t, err)
		require.Len(t, held, 2)
		renewed, err := s.RenewLeases(ctx, "owner-a", leasesOf(held), shortTTL)
		require.NoError(t, err)
		require.Len(t, renewed, 2)
		byName := byDomain(held)
		kept := []store.Lease{byName["kept.example"].Lease()}
		var b []store.DomainState
		require.Eventually(t, func() bool {
			got, err := s.RenewLeases(ctx, "owner-a", kept, shortTTL)
			require.NoError(t, err)
			require.Equal(t, []string{"kept.example"}, leaseNames(got), "the renewed lease was lost")
			b, err = s.AcquireLeases(ctx, "owner-b", longTTL, 2)
			require.NoError(t, err)
			return len(b) > 0
		}, waitFor, tick, "a lease its owner stopped renewing did not expire")
		require.Equal(t, []string{"dropped.example"}, names(b))
		require.Equal(t, "owner-a", domainState(t, s, "kept.example").Owner)
	})

	su.run(t, "InvalidArguments", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example")
		_, err := s.AcquireLeases(ctx, "", longTTL, 1)
		require.ErrorIs(t, err, store.ErrInvalid, "empty owner")
		_, err = s.AcquireLeases(ctx, "owner-a", 0, 1)
		require.ErrorIs(t, err, store.ErrInvalid, "zero ttl")
		_, err = s.AcquireLeases(ctx, "owner-a", -time.Second, 1)
		require.ErrorIs(t, err, store.ErrInvalid, "negative ttl")
		_, err = s.AcquireLeases(ctx, "owner-a", longTTL, -1)
		require.ErrorIs(t, err, store.ErrInvalid, "negative limit")
		require.Empty(t, domainState(t, s, "a.example").Owner, "a refused call acquired a lease")

		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 1)
		require.NoError(t, err)
		require.Len(t, held, 1)
		_, err = s.RenewLeases(ctx, "", leasesOf(held), longTTL)
		require.ErrorIs(t, err, store.ErrInvalid, "renew: empty owner")
		_, err = s.RenewLeases(ctx, "owner-a", leasesOf(held), 0)
		require.ErrorIs(t, err, store.ErrInvalid, "renew: zero ttl")
		err = s.ReleaseLeases(ctx, "", leasesOf(held))
		require.ErrorIs(t, err, store.ErrInvalid, "release: empty owner")
		require.Equal(t, "owner-a", domainState(t, s, "a.example").Owner)
	})
}

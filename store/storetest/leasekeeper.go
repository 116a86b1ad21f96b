package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// testLeaseKeeper checks KeepLeases of stores that implement
// store.LeaseKeeper: an owner renews its leases without listing them, and
// the change mark tells it whenever it must look at its whole list again,
// because a lease was lost or an admin changed one of its domains.
func testLeaseKeeper(t *testing.T, su suite) {
	keeper := func(t *testing.T, s store.Store) store.LeaseKeeper {
		k, ok := s.(store.LeaseKeeper)
		if !ok {
			t.Skipf("%T does not implement store.LeaseKeeper", s)
		}
		return k
	}
	// keepAll acquires every registered domain for owner-a with ttl and
	// makes a Full call with them, as an owner's first call; it returns
	// the acquired states and the mark.
	keepAll := func(t *testing.T, s store.Store, ttl time.Duration, n int) ([]store.DomainState, int64) {
		t.Helper()
		held, err := s.AcquireLeases(t.Context(), "owner-a", ttl, n)
		require.NoError(t, err)
		require.Len(t, held, n)
		kept, err := keeper(t, s).KeepLeases(t.Context(), "owner-a", store.LeaseKeep{Full: true, Leases: leasesOf(held)}, ttl)
		require.NoError(t, err)
		require.ElementsMatch(t, names(held), leaseNames(kept.Leases))
		return held, kept.Mark
	}
	// quiet makes a call listing nothing and returns what it reported.
	quiet := func(t *testing.T, s store.Store, since int64, ttl time.Duration) store.LeaseKept {
		t.Helper()
		kept, err := keeper(t, s).KeepLeases(t.Context(), "owner-a", store.LeaseKeep{Since: since}, ttl)
		require.NoError(t, err)
		require.Empty(t, kept.Leases, "a call listing nothing returned leases")
		return kept
	}

	// stayHeld makes calls that list nothing for d, paced by a ticker as an
	// owner's renewals are, and checks that another owner takes none of
	// owner-a's leases meanwhile.
	stayHeld := func(t *testing.T, s store.Store, mark int64, d time.Duration) {
		t.Helper()
		ticker := time.NewTicker(shortTTL / 10)
		defer ticker.Stop()
		for end := time.Now().Add(d); time.Now().Before(end); <-ticker.C {
			require.False(t, quiet(t, s, mark, shortTTL).Changed)
			got, err := s.AcquireLeases(t.Context(), "owner-b", longTTL, 100)
			require.NoError(t, err)
			require.Empty(t, got, "a lease kept by its owner was taken over")
		}
	}

	su.run(t, "RenewsUnlistedLeases", func(t *testing.T, s store.Store) {
		register(t, s, "a.example", "b.example")
		_, mark := keepAll(t, s, longTTL, 2)
		before := time.Now()
		kept := quiet(t, s, mark, 2*longTTL)
		after := time.Now()
		require.False(t, kept.Changed, "nothing happened, yet the mark changed")
		require.Equal(t, mark, kept.Mark)
		for _, d := range []string{"a.example", "b.example"} {
			st := domainState(t, s, d)
			require.Equal(t, "owner-a", st.Owner)
			requireNear(t, before.Add(2*longTTL), after.Add(2*longTTL), st.LeaseExpiresAt, d+" lease expiry")
		}
	})

	su.run(t, "QuietCallsHoldLeases", func(t *testing.T, s store.Store) {
		register(t, s, "a.example", "b.example")
		_, mark := keepAll(t, s, shortTTL, 2)
		// Several TTLs of calls that list nothing: nobody takes a lease.
		stayHeld(t, s, mark, 4*shortTTL)
	})

	su.run(t, "ListedLeases", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "old.example")
		_, mark := keepAll(t, s, longTTL, 1)
		register(t, s, "new.example", "lost.example")
		ids := appendN(t, s, 3)
		fresh, err := s.AcquireLeases(ctx, "owner-a", shortTTL, 2)
		require.NoError(t, err)
		require.Len(t, fresh, 2)
		byName := byDomain(fresh)

		// A lease acquired since the last call is listed and held from
		// then on like the others; its cursor rises to SettledThrough.
		l := byName["new.example"].Lease()
		l.SettledThrough = ids[2]
		lost := byName["lost.example"].Lease()
		lost.Token-- // not this owner's token: not renewed, cursor unmoved
		lost.SettledThrough = ids[2]
		kept, err := keeper(t, s).KeepLeases(ctx, "owner-a", store.LeaseKeep{Since: mark, Leases: []store.Lease{l, lost}}, longTTL)
		require.NoError(t, err)
		require.False(t, kept.Changed)
		require.Equal(t, []string{"new.example"}, leaseNames(kept.Leases))
		require.Equal(t, byName["new.example"].LeaseToken, kept.Leases[0].Token)
		require.Equal(t, byName["new.example"].Revision, kept.Leases[0].Revision)
		require.True(t, kept.Leases[0].ExpiresAt.After(time.Now().Add(longTTL/2)))
		require.Equal(t, ids[2], domainState(t, s, "new.example").Cursor, "a listed lease's cursor did not follow SettledThrough")
		require.Equal(t, byName["lost.example"].Cursor, domainState(t, s, "lost.example").Cursor, "a refused lease moved a cursor")

		// A lower SettledThrough never lowers a cursor.
		l.SettledThrough = ids[0]
		_, err = keeper(t, s).KeepLeases(ctx, "owner-a", store.LeaseKeep{Since: mark, Leases: []store.Lease{l}}, longTTL)
		require.NoError(t, err)
		require.Equal(t, ids[2], domainState(t, s, "new.example").Cursor)

		// new.example is held by quiet calls now; lost.example, never
		// given with its token, ends with its own expiry.
		var b []store.DomainState
		require.Eventually(t, func() bool {
			require.False(t, quiet(t, s, mark, longTTL).Changed)
			got, err := s.AcquireLeases(ctx, "owner-b", longTTL, 3)
			require.NoError(t, err)
			b = append(b, got...)
			return len(b) > 0
		}, waitFor, tick, "a lease never kept did not expire")
		require.Equal(t, []string{"lost.example"}, names(b))
		require.Equal(t, "owner-a", domainState(t, s, "new.example").Owner)
	})

	su.run(t, "FullCallLetsUnlistedLeasesGo", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "kept.example", "dropped.example")
		held, _ := keepAll(t, s, shortTTL, 2)
		byName := byDomain(held)
		kept, err := keeper(t, s).KeepLeases(ctx, "owner-a", store.LeaseKeep{Full: true, Leases: []store.Lease{byName["kept.example"].Lease()}}, shortTTL)
		require.NoError(t, err)
		require.Equal(t, []string{"kept.example"}, leaseNames(kept.Leases))
		mark := kept.Mark
		var b []store.DomainState
		require.Eventually(t, func() bool {
			quiet(t, s, mark, longTTL) // dropped.example's expiry is its own since the full call
			got, err := s.AcquireLeases(ctx, "owner-b", longTTL, 2)
			require.NoError(t, err)
			b = append(b, got...)
			return len(b) > 0
		}, waitFor, tick, "a lease left out of a full call did not expire")
		require.Equal(t, []string{"dropped.example"}, names(b))
		require.Equal(t, "owner-a", domainState(t, s, "kept.example").Owner)
	})

	// changed checks that what happens in event is reported by the next
	// quiet call, and that a Full call then shows it and settles the mark.
	changed := func(name string, setup func(t *testing.T, s store.Store), event func(t *testing.T, s store.Store, held []store.DomainState), check func(t *testing.T, held []store.DomainState, full store.LeaseKept)) {
		su.run(t, name, func(t *testing.T, s store.Store) {
			ctx := t.Context()
			setup(t, s)
			all, err := s.Domains(ctx, nil)
			require.NoError(t, err)
			held, mark := keepAll(t, s, shortTTL, len(all))
			event(t, s, held)
			got := quiet(t, s, mark, longTTL)
			require.True(t, got.Changed, "the owner was not told")
			require.NotEqual(t, mark, got.Mark)
			full, err := keeper(t, s).KeepLeases(ctx, "owner-a", store.LeaseKeep{Full: true, Leases: leasesOf(held)}, longTTL)
			require.NoError(t, err)
			check(t, held, full)
			again := quiet(t, s, full.Mark, longTTL)
			require.False(t, again.Changed, "the mark changed again with nothing happening")
		})
	}
	two := func(t *testing.T, s store.Store) { register(t, s, "a.example", "b.example") }
	revisionRose := func(domain string) func(t *testing.T, held []store.DomainState, full store.LeaseKept) {
		return func(t *testing.T, held []store.DomainState, full store.LeaseKept) {
			require.Len(t, full.Leases, len(held))
			for _, l := range full.Leases {
				if l.Domain == domain {
					require.Greater(t, l.Revision, byDomain(held)[domain].Revision)
				} else {
					require.Equal(t, byDomain(held)[l.Domain].Revision, l.Revision)
				}
			}
		}
	}
	leaseLost := func(domain string) func(t *testing.T, held []store.DomainState, full store.LeaseKept) {
		return func(t *testing.T, held []store.DomainState, full store.LeaseKept) {
			require.Len(t, full.Leases, len(held)-1)
			require.NotContains(t, leaseNames(full.Leases), domain)
		}
	}

	changed("ChangedByAdmin", two, func(t *testing.T, s store.Store, _ []store.DomainState) {
		_, err := s.ChangeDomain(t.Context(), "a.example", store.DomainChange{Status: store.StatusPaused})
		require.NoError(t, err)
	}, revisionRose("a.example"))

	changed("ChangedBySharedInbox", two, func(t *testing.T, s store.Store, _ []store.DomainState) {
		require.NoError(t, s.RegisterDomains(t.Context(), []store.DomainRegistration{{Domain: "b.example", SharedInbox: "https://b.example/inbox"}}))
	}, revisionRose("b.example"))

	changed("ChangedByForget", two, func(t *testing.T, s store.Store, _ []store.DomainState) {
		require.NoError(t, s.ForgetDomain(t.Context(), "a.example"))
	}, leaseLost("a.example"))

	changed("ChangedByTakeover", two, func(t *testing.T, s store.Store, _ []store.DomainState) {
		// owner-a stops calling; its leases end and owner-b takes one.
		require.Eventually(t, func() bool {
			got, err := s.AcquireLeases(t.Context(), "owner-b", longTTL, 1)
			require.NoError(t, err)
			return len(got) == 1
		}, waitFor, tick, "leases of an owner that stopped calling were not taken over")
	}, func(t *testing.T, held []store.DomainState, full store.LeaseKept) {
		require.Len(t, full.Leases, 1, "a lease taken over was renewed, or a lease not taken over was lost")
	})

	changed("ChangedByPrune", func(t *testing.T, s store.Store) {
		register(t, s, "dead.example")
		appendN(t, s, 3)
		register(t, s, "live.example")
		setStates(t, s, func(st *store.DomainState) {
			if st.Domain == "dead.example" {
				st.Status = store.StatusDead
			}
		})
	}, func(t *testing.T, s store.Store, _ []store.DomainState) {
		res, err := s.Prune(t.Context())
		require.NoError(t, err)
		require.Len(t, res.FastForwarded, 1)
	}, revisionRose("dead.example"))

	su.run(t, "OwnChangesAreNotReported", func(t *testing.T, s store.Store) {
		// What the owner does itself (checkpoints, releases, taking more
		// leases) it knows of: the mark stays.
		ctx := t.Context()
		register(t, s, "a.example", "b.example")
		held, mark := keepAll(t, s, longTTL, 2)
		register(t, s, "c.example")
		ids := appendN(t, s, 1)
		st := byDomain(held)["a.example"]
		st.Cursor = ids[0]
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{st}, nil))
		more, err := s.AcquireLeases(ctx, "owner-a", longTTL, 1)
		require.NoError(t, err)
		require.Equal(t, []string{"c.example"}, names(more))
		require.NoError(t, s.ReleaseLeases(ctx, "owner-a", []store.Lease{byDomain(held)["b.example"].Lease()}))
		require.False(t, quiet(t, s, mark, longTTL).Changed)
	})

	su.run(t, "RenewLeasesKeepsThemFollowing", func(t *testing.T, s store.Store) {
		// A renewal of the whole list by RenewLeases in between leaves the
		// leases held by the calls that list nothing after it.
		ctx := t.Context()
		register(t, s, "a.example")
		held, mark := keepAll(t, s, shortTTL, 1)
		renewed, err := s.RenewLeases(ctx, "owner-a", leasesOf(held), shortTTL)
		require.NoError(t, err)
		require.Len(t, renewed, 1)
		stayHeld(t, s, mark, 3*shortTTL)
	})

	su.run(t, "GoneOwnerIsNotCountedLive", func(t *testing.T, s store.Store) {
		// Leases that follow an owner that stopped calling make it count
		// as live no longer than it is.
		register(t, s, "a.example", "b.example")
		keepAll(t, s, shortTTL, 2)
		require.Eventually(t, func() bool {
			st, err := s.LeaseStats(t.Context())
			require.NoError(t, err)
			return st.Owners == 0
		}, waitFor, tick, "an owner that stopped calling still counts as live")
	})

	su.run(t, "InvalidArguments", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		_, err := keeper(t, s).KeepLeases(ctx, "", store.LeaseKeep{Full: true}, longTTL)
		require.ErrorIs(t, err, store.ErrInvalid, "empty owner")
		_, err = keeper(t, s).KeepLeases(ctx, "owner-a", store.LeaseKeep{Full: true}, 0)
		require.ErrorIs(t, err, store.ErrInvalid, "zero ttl")
	})
}

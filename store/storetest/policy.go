package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// testDomainPolicy covers suspended domains (reported at append, passed
// by retention) and forgotten ones (removed, registered again as new).
func testDomainPolicy(t *testing.T, su suite) {
	su.run(t, "SuspendedReportedAtAppend", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example", "b.example")
		_, err := s.ChangeDomain(ctx, "b.example", store.DomainChange{Status: store.StatusSuspended})
		require.NoError(t, err)

		got := appendAll(t, s, activity("a.example", "b.example"), activity("new.example"), activity("b.example"))
		require.Equal(t, []string{"b.example"}, got[0].Suspended)
		require.Empty(t, got[1].Suspended)
		require.Equal(t, []string{"b.example"}, got[2].Suspended)
		for i, r := range got {
			require.NotZero(t, r.ID, i)
			require.False(t, r.Duplicate, i)
		}
		require.Equal(t, store.StatusSuspended, domainState(t, s, "b.example").Status, "an append changed the suspension")

		_, err = s.ChangeDomain(ctx, "b.example", store.DomainChange{Status: store.StatusActive})
		require.NoError(t, err)
		got = appendAll(t, s, activity("b.example"))
		require.Empty(t, got[0].Suspended, "a domain no longer suspended is reported")
	})

	su.run(t, "SuspendedDoesNotHoldBackPrune", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "active.example", "suspended.example")
		all := appendN(t, s, 10)
		setStates(t, s, func(st *store.DomainState) {
			st.Cursor = map[string]int64{"active.example": all[6], "suspended.example": all[1]}[st.Domain]
		})
		before, err := s.ChangeDomain(ctx, "suspended.example", store.DomainChange{Status: store.StatusSuspended})
		require.NoError(t, err)

		res, err := s.Prune(ctx)
		require.NoError(t, err)
		require.Equal(t, all[6], res.Below, "the suspended domain held retention back")
		require.EqualValues(t, 7, res.Deleted)
		require.Empty(t, res.FastForwarded, "a suspended domain is not reported as left behind")
		st := domainState(t, s, "suspended.example")
		require.Equal(t, all[6], st.Cursor, "the suspended domain is moved up with retention")
		require.Greater(t, st.Revision, before.Revision, "its owner cannot save the older cursor back")
		require.Equal(t, store.StatusSuspended, st.Status)
	})

	su.run(t, "ForgetDomain", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example", "b.example")
		first := appendOne(t, s, "a.example")
		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 10)
		require.NoError(t, err)
		a := byDomain(held)["a.example"]
		a.Cursor = first
		a.SignatureScheme = "rfc9421"
		a.SignatureCheckedAt = time.Now()
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{a}, []store.DeadLetter{deadLetter("a.example", first)}))

		require.NoError(t, s.ForgetDomain(ctx, "a.example"))
		got, err := s.Domains(ctx, nil)
		require.NoError(t, err)
		require.Equal(t, []string{"b.example"}, names(got), "the domain is still known")
		require.ErrorIs(t, s.ForgetDomain(ctx, "a.example"), store.ErrNotFound)
		require.ErrorIs(t, s.ForgetDomain(ctx, ""), store.ErrInvalid)
		dls, err := s.DeadLetters(ctx, store.DeadLetterFilter{Domain: "a.example"})
		require.NoError(t, err)
		require.Len(t, dls, 1, "the dead letters of a forgotten domain are kept")

		// The owner learns of the loss at its next renewal or save.
		renewed, err := s.RenewLeases(ctx, "owner-a", leasesOf(held), longTTL)
		require.NoError(t, err)
		require.Equal(t, []string{"b.example"}, leaseNames(renewed))
		err = s.Checkpoint(ctx, []store.DomainState{a}, nil)
		require.ErrorIs(t, err, store.ErrLeaseLost)

		// Named again, it is registered as a new domain, at the head, and
		// its lease tokens go on above the old ones: the same owner taking
		// it again gets a token its old state cannot pass the fencing with.
		h := head(t, s)
		again := appendOne(t, s, "a.example")
		st := domainState(t, s, "a.example")
		require.Equal(t, h, st.Cursor, "registered again at the head")
		require.Equal(t, store.StatusActive, st.Status)
		require.Empty(t, st.SignatureScheme, "the old state came back")
		require.Nil(t, st.Progress)
		retaken, err := s.AcquireLeases(ctx, "owner-a", longTTL, 10)
		require.NoError(t, err)
		require.Equal(t, []string{"a.example"}, names(retaken))
		require.Greater(t, retaken[0].LeaseToken, a.LeaseToken, "the lease tokens started over")
		a.Cursor = again
		err = s.Checkpoint(ctx, []store.DomainState{a}, nil)
		require.ErrorIs(t, err, store.ErrLeaseLost, "the state of the forgotten domain was saved on the new one")
		require.Equal(t, h, domainState(t, s, "a.example").Cursor)
	})
}

package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// testChangeDomain covers admin changes and how they fence the owner's
// checkpoints through the domain's revision.
func testChangeDomain(t *testing.T, su suite) {
	su.run(t, "AppliesAndCountsRevisions", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example")
		appendN(t, s, 5)
		failing := time.Now().Add(-time.Hour)
		setStates(t, s, func(st *store.DomainState) {
			st.Status = store.StatusDead
			st.FailCount = 7
			st.FailingSince = failing
			st.NextAttemptAt = time.Now().Add(time.Hour)
			st.LastError = "connection refused"
		})
		before := domainState(t, s, "a.example")

		got, err := s.ChangeDomain(ctx, "a.example", store.DomainChange{Status: store.StatusActive, ClearBackoff: true})
		require.NoError(t, err)
		require.Equal(t, store.StatusActive, got.Status)
		require.Zero(t, got.FailCount)
		require.True(t, got.FailingSince.IsZero())
		require.True(t, got.NextAttemptAt.IsZero())
		require.Empty(t, got.LastError)
		require.Equal(t, before.Revision+1, got.Revision)
		require.Equal(t, got.Revision, domainState(t, s, "a.example").Revision, "the change is saved")

		got, err = s.ChangeDomain(ctx, "a.example", store.DomainChange{SkipTo: 4})
		require.NoError(t, err)
		require.EqualValues(t, 4, got.Cursor)
		got, err = s.ChangeDomain(ctx, "a.example", store.DomainChange{SkipTo: 2})
		require.NoError(t, err)
		require.EqualValues(t, 4, got.Cursor, "a skip never lowers the cursor")
		got, err = s.ChangeDomain(ctx, "a.example", store.DomainChange{Status: store.StatusPaused})
		require.NoError(t, err)
		require.Equal(t, store.StatusPaused, got.Status)
		require.Equal(t, before.Revision+4, got.Revision)
	})

	su.run(t, "UnknownAndInvalid", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		_, err := s.ChangeDomain(ctx, "unknown.example", store.DomainChange{Status: store.StatusPaused})
		require.ErrorIs(t, err, store.ErrNotFound)
		register(t, s, "a.example")
		_, err = s.ChangeDomain(ctx, "", store.DomainChange{})
		require.ErrorIs(t, err, store.ErrInvalid)
		_, err = s.ChangeDomain(ctx, "a.example", store.DomainChange{Status: "sleeping"})
		require.ErrorIs(t, err, store.ErrInvalid)
		_, err = s.ChangeDomain(ctx, "a.example", store.DomainChange{SkipTo: -1})
		require.ErrorIs(t, err, store.ErrInvalid)
		require.Zero(t, domainState(t, s, "a.example").Revision, "a refused change changes nothing")
	})

	su.run(t, "FencesTheOwnersCheckpoint", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "changed.example", "other.example")
		appendN(t, s, 5)
		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 2)
		require.NoError(t, err)
		require.Len(t, held, 2)
		_, err = s.ChangeDomain(ctx, "changed.example", store.DomainChange{Status: store.StatusPaused})
		require.NoError(t, err)

		states := byDomain(held)
		changed, other := states["changed.example"], states["other.example"]
		changed.Cursor, other.Cursor = 3, 3
		err = s.Checkpoint(ctx, []store.DomainState{changed, other}, []store.DeadLetter{
			deadLetter("changed.example", 1), deadLetter("other.example", 2),
		})
		require.ErrorIs(t, err, store.ErrStale)
		require.False(t, errors.Is(err, store.ErrLeaseLost), "the lease is still held")
		var se *store.StaleStateError
		require.True(t, errors.As(err, &se))
		require.Equal(t, []string{"changed.example"}, se.Domains)
		got := domainState(t, s, "changed.example")
		require.Equal(t, store.StatusPaused, got.Status, "an owner that has not seen the change cannot undo it")
		require.Zero(t, got.Cursor)
		require.EqualValues(t, 3, domainState(t, s, "other.example").Cursor, "the other state is saved")
		dls, err := s.DeadLetters(ctx, store.DeadLetterFilter{})
		require.NoError(t, err)
		require.Equal(t, []string{"other.example"}, []string{dls[0].Domain})
		require.Len(t, dls, 1)

		// Renewal tells the owner about the change; with the new revision it saves.
		renewed, err := s.RenewLeases(ctx, "owner-a", leasesOf([]store.DomainState{changed}), longTTL)
		require.NoError(t, err)
		require.Len(t, renewed, 1)
		require.Equal(t, got.Revision, renewed[0].Revision)
		changed.Revision = renewed[0].Revision
		changed.Status = store.StatusPaused
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{changed}, nil))
		require.EqualValues(t, 3, domainState(t, s, "changed.example").Cursor)
	})

	su.run(t, "StaleAndLostTogether", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "changed.example")
		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 1)
		require.NoError(t, err)
		require.Len(t, held, 1)
		register(t, s, "lost.example")
		lost, err := s.AcquireLeases(ctx, "owner-a", shortTTL, 1)
		require.NoError(t, err)
		require.Len(t, lost, 1)
		require.Eventually(t, func() bool {
			taken, err := s.AcquireLeases(ctx, "owner-b", longTTL, 1)
			require.NoError(t, err)
			return len(taken) == 1
		}, waitFor, tick)
		_, err = s.ChangeDomain(ctx, "changed.example", store.DomainChange{ClearBackoff: true})
		require.NoError(t, err)
		err = s.Checkpoint(ctx, []store.DomainState{held[0], lost[0]}, nil)
		require.ErrorIs(t, err, store.ErrStale)
		require.ErrorIs(t, err, store.ErrLeaseLost)
	})
}

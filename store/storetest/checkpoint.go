package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// testCheckpoint checks that Checkpoint saves exactly the fields it names,
// and that it is fenced: a save by an owner that lost the lease is refused
// while the rest of the call takes effect.
func testCheckpoint(t *testing.T, su suite) {
	su.run(t, "SavesStateFields", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		require.NoError(t, s.RegisterDomains(ctx, []store.DomainRegistration{
			{Domain: "a.example", SharedInbox: "https://a.example/inbox"},
		}))
		appendN(t, s, 10)
		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 1)
		require.NoError(t, err)
		require.Len(t, held, 1)
		lease := held[0]

		// Times carry nanoseconds; stores keep microseconds.
		base := time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC)
		st := lease
		st.Cursor = 7
		st.Status = store.StatusPaused
		st.FailCount = 3
		st.FailingSince = base
		st.NextAttemptAt = base.Add(90*time.Second + 999)
		st.LastStatus = 503
		st.LastError = "503 Service Unavailable"
		st.LastSuccessAt = base.Add(-time.Hour + 1)
		// Not saved by Checkpoint:
		st.SharedInbox = "https://evil.example/inbox"
		st.LeaseExpiresAt = base.Add(100 * 24 * time.Hour)
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{st}, nil))

		got := domainState(t, s, "a.example")
		require.EqualValues(t, 7, got.Cursor)
		require.Equal(t, store.StatusPaused, got.Status)
		require.Equal(t, 3, got.FailCount)
		requireTimeEqual(t, st.FailingSince.Truncate(time.Microsecond), got.FailingSince, "FailingSince")
		requireTimeEqual(t, st.NextAttemptAt.Truncate(time.Microsecond), got.NextAttemptAt, "NextAttemptAt")
		require.Equal(t, 503, got.LastStatus)
		require.Equal(t, "503 Service Unavailable", got.LastError)
		requireTimeEqual(t, st.LastSuccessAt.Truncate(time.Microsecond), got.LastSuccessAt, "LastSuccessAt")
		require.Equal(t, "https://a.example/inbox", got.SharedInbox, "Checkpoint changed the shared inbox")
		require.Equal(t, "owner-a", got.Owner, "Checkpoint changed the owner")
		require.Equal(t, lease.LeaseToken, got.LeaseToken, "Checkpoint changed the token")
		requireTimeEqual(t, lease.LeaseExpiresAt, got.LeaseExpiresAt, "Checkpoint changed the lease expiry")

		// Zero values round-trip too: a healthy domain has no failure times.
		healthy := lease
		healthy.Cursor = 10
		healthy.Status = store.StatusActive
		healthy.LastSuccessAt = base
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{healthy}, nil))
		got = domainState(t, s, "a.example")
		require.EqualValues(t, 10, got.Cursor)
		require.Equal(t, store.StatusActive, got.Status)
		require.Zero(t, got.FailCount)
		require.True(t, got.FailingSince.IsZero(), "FailingSince: %v", got.FailingSince)
		require.True(t, got.NextAttemptAt.IsZero(), "NextAttemptAt: %v", got.NextAttemptAt)
		require.Zero(t, got.LastStatus)
		require.Empty(t, got.LastError)
		requireTimeEqual(t, base.Truncate(time.Microsecond), got.LastSuccessAt, "LastSuccessAt")

		// Saved times round-trip exactly once truncated.
		again := got
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{again}, nil))
		require.Equal(t, got.LastSuccessAt.UnixMicro(), domainState(t, s, "a.example").LastSuccessAt.UnixMicro())
	})

	su.run(t, "NeverMovesACursorBackwards", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example")
		ids := appendN(t, s, 5)
		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 1)
		require.NoError(t, err)
		require.Len(t, held, 1)
		st := held[0]
		st.Cursor = ids[3]
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{st}, nil))
		st.Cursor = ids[1]
		st.FailCount = 2
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{st}, nil))
		got := domainState(t, s, "a.example")
		require.Equal(t, ids[3], got.Cursor, "an owner's save moved the cursor backwards")
		require.Equal(t, 2, got.FailCount, "the rest of the state is saved")
	})

	su.run(t, "SavesProgress", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example")
		ids := appendN(t, s, 8)
		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 1)
		require.NoError(t, err)
		require.Len(t, held, 1)
		require.Nil(t, held[0].Progress, "a new domain has no progress")
		next := time.Date(2026, 3, 4, 5, 6, 7, 123000000, time.UTC)
		progress := &store.Progress{
			Settled: []store.IDRange{{First: ids[3], Last: ids[4]}, {First: ids[6], Last: ids[6]}},
			Deliveries: []store.DeliveryProgress{
				{ActivityID: ids[2], Inbox: "https://a.example/users/1/inbox", Attempts: 4, NextAttemptAt: next},
				{ActivityID: ids[2], Inbox: "https://a.example/users/2/inbox", Settled: true, Attempts: 1},
				{ActivityID: ids[5], Inbox: "https://a.example/users/1/inbox", Attempts: 1},
			},
			OthersSettled: []int64{ids[5]},
		}
		st := held[0]
		st.Cursor = ids[1]
		st.Progress = progress.Clone()
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{st}, nil))
		st.Progress.Settled[0].First = 0 // the store kept its own copy
		got := domainState(t, s, "a.example")
		require.NotNil(t, got.Progress)
		require.Equal(t, progress.Settled, got.Progress.Settled)
		require.Equal(t, progress.OthersSettled, got.Progress.OthersSettled)
		require.Len(t, got.Progress.Deliveries, 3)
		for i, d := range got.Progress.Deliveries {
			want := progress.Deliveries[i]
			requireTimeEqual(t, want.NextAttemptAt, d.NextAttemptAt, "NextAttemptAt")
			d.NextAttemptAt, want.NextAttemptAt = time.Time{}, time.Time{}
			require.Equal(t, want, d)
		}

		// Clearing the backoff clears the saved retry times too, and keeps
		// the rest of the progress.
		_, err = s.ChangeDomain(ctx, "a.example", store.DomainChange{ClearBackoff: true})
		require.NoError(t, err)
		got = domainState(t, s, "a.example")
		require.Equal(t, progress.Settled, got.Progress.Settled)
		require.Len(t, got.Progress.Deliveries, 3)
		for _, d := range got.Progress.Deliveries {
			require.True(t, d.NextAttemptAt.IsZero(), "a retry time survived ClearBackoff: %+v", d)
		}
		require.Equal(t, 4, got.Progress.Deliveries[0].Attempts)
		require.Equal(t, progress.OthersSettled, got.Progress.OthersSettled)

		// A new owner gets it with the lease; nil clears it.
		require.NoError(t, s.ReleaseLeases(ctx, "owner-a", leasesOf(held)))
		taken, err := s.AcquireLeases(ctx, "owner-b", longTTL, 1)
		require.NoError(t, err)
		require.Len(t, taken, 1)
		require.NotNil(t, taken[0].Progress)
		require.Equal(t, progress.Settled, taken[0].Progress.Settled)
		cleared := taken[0]
		cleared.Cursor, cleared.Progress = ids[7], nil
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{cleared}, nil))
		require.Nil(t, domainState(t, s, "a.example").Progress)
	})

	su.run(t, "RecordsADeadLetterOncePerDelivery", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example")
		ids := appendN(t, s, 2)
		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 1)
		require.NoError(t, err)
		first, other := deadLetter("a.example", ids[0]), deadLetter("a.example", ids[1])
		otherInbox := first
		otherInbox.Inbox = "https://a.example/users/2/inbox"
		// Twice in one call, and again in a later one (a second owner
		// giving up on the same delivery): recorded once.
		require.NoError(t, s.Checkpoint(ctx, held, []store.DeadLetter{first, first, otherInbox}))
		require.NoError(t, s.Checkpoint(ctx, held, []store.DeadLetter{first, other}))
		dls, err := s.DeadLetters(ctx, store.DeadLetterFilter{Domain: "a.example"})
		require.NoError(t, err)
		require.Len(t, dls, 3)
		// Once deleted (requeued or discarded), it may be recorded again.
		_, err = s.DeleteDeadLetters(ctx, []int64{dls[0].ID})
		require.NoError(t, err)
		require.NoError(t, s.Checkpoint(ctx, held, []store.DeadLetter{first}))
		dls, err = s.DeadLetters(ctx, store.DeadLetterFilter{Domain: "a.example"})
		require.NoError(t, err)
		require.Len(t, dls, 3)
	})

	su.run(t, "SavesSignatureScheme", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example")
		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 1)
		require.NoError(t, err)
		require.Len(t, held, 1)
		require.Empty(t, held[0].SignatureScheme, "a new domain's scheme is unknown")
		require.True(t, held[0].SignatureCheckedAt.IsZero())

		checked := time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC)
		st := held[0]
		st.SignatureScheme = "rfc9421"
		st.SignatureCheckedAt = checked
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{st}, nil))
		got := domainState(t, s, "a.example")
		require.Equal(t, "rfc9421", got.SignatureScheme)
		requireTimeEqual(t, checked.Truncate(time.Microsecond), got.SignatureCheckedAt, "SignatureCheckedAt")

		// An admin change keeps it, and the next owner reads it.
		changed, err := s.ChangeDomain(ctx, "a.example", store.DomainChange{ClearBackoff: true})
		require.NoError(t, err)
		require.Equal(t, "rfc9421", changed.SignatureScheme)
		require.NoError(t, s.ReleaseLeases(ctx, "owner-a", []store.Lease{got.Lease()}))
		held, err = s.AcquireLeases(ctx, "owner-b", longTTL, 1)
		require.NoError(t, err)
		require.Len(t, held, 1)
		require.Equal(t, "rfc9421", held[0].SignatureScheme)
		requireTimeEqual(t, checked.Truncate(time.Microsecond), held[0].SignatureCheckedAt, "SignatureCheckedAt after a handover")

		// A refused save does not change it.
		stale := st
		stale.SignatureScheme = "cavage"
		require.Error(t, s.Checkpoint(ctx, []store.DomainState{stale}, nil))
		require.Equal(t, "rfc9421", domainState(t, s, "a.example").SignatureScheme)

		// Saving "" and a zero time forgets it.
		forget := held[0]
		forget.SignatureScheme, forget.SignatureCheckedAt = "", time.Time{}
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{forget}, nil))
		got = domainState(t, s, "a.example")
		require.Empty(t, got.SignatureScheme)
		require.True(t, got.SignatureCheckedAt.IsZero())
	})

	su.run(t, "SavesAfterLeaseExpiryWhenNotTakenOver", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example")
		appendN(t, s, 3)
		held, err := s.AcquireLeases(ctx, "owner-a", shortTTL, 1)
		require.NoError(t, err)
		require.Len(t, held, 1)
		require.Eventually(t, func() bool {
			st, err := s.LeaseStats(ctx)
			require.NoError(t, err)
			return st.Owners == 0
		}, waitFor, tick, "the lease did not expire")
		st := held[0]
		st.Cursor = 3
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{st}, nil))
		require.EqualValues(t, 3, domainState(t, s, "a.example").Cursor)
	})

	su.run(t, "FencedByLease", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "kept.example")
		appendN(t, s, 5)
		register(t, s, "lost.example")
		kept, err := s.AcquireLeases(ctx, "owner-a", longTTL, 1)
		require.NoError(t, err)
		require.Equal(t, []string{"kept.example"}, names(kept))
		lost, err := s.AcquireLeases(ctx, "owner-a", shortTTL, 1)
		require.NoError(t, err)
		require.Equal(t, []string{"lost.example"}, names(lost))

		var taken []store.DomainState
		require.Eventually(t, func() bool {
			taken, err = s.AcquireLeases(ctx, "owner-b", longTTL, 10)
			require.NoError(t, err)
			return len(taken) > 0
		}, waitFor, tick, "the short lease was not taken over")
		require.Equal(t, []string{"lost.example"}, names(taken))

		a1, a2 := kept[0], lost[0]
		a1.Cursor, a2.Cursor = 4, 5
		a1.LastError, a2.LastError = "saved", "refused"
		err = s.Checkpoint(ctx, []store.DomainState{a1, a2}, []store.DeadLetter{
			deadLetter("kept.example", 1),
			deadLetter("lost.example", 2),
		})
		require.ErrorIs(t, err, store.ErrLeaseLost)
		var lle *store.LeaseLostError
		require.True(t, errors.As(err, &lle), "error %v is not a *LeaseLostError", err)
		require.Equal(t, []string{"lost.example"}, lle.Domains)

		// The state of the domain still held is saved in the same call ...
		got := domainState(t, s, "kept.example")
		require.EqualValues(t, 4, got.Cursor)
		require.Equal(t, "saved", got.LastError)
		// ... the refused one is not, and keeps its new owner.
		got = domainState(t, s, "lost.example")
		require.Equal(t, taken[0].Cursor, got.Cursor, "a refused state was saved")
		require.Empty(t, got.LastError)
		require.Equal(t, "owner-b", got.Owner)
		require.Equal(t, taken[0].LeaseToken, got.LeaseToken)

		// Only the dead letter of the domain still held is recorded.
		dls, err := s.DeadLetters(ctx, store.DeadLetterFilter{})
		require.NoError(t, err)
		require.Len(t, dls, 1)
		require.Equal(t, "kept.example", dls[0].Domain)

		// The new owner saves.
		b := taken[0]
		b.Cursor = 5
		require.NoError(t, s.Checkpoint(ctx, []store.DomainState{b}, nil))
		require.EqualValues(t, 5, domainState(t, s, "lost.example").Cursor)

		// Once the new owner releases, a save with the old token is still
		// refused after the next acquisition.
		require.NoError(t, s.ReleaseLeases(ctx, "owner-b", leasesOf(taken)))
		again, err := s.AcquireLeases(ctx, "owner-a", longTTL, 10)
		require.NoError(t, err)
		require.Equal(t, []string{"lost.example"}, names(again))
		err = s.Checkpoint(ctx, []store.DomainState{a2}, nil)
		require.ErrorIs(t, err, store.ErrLeaseLost, "a save with a superseded token was accepted")
	})

	su.run(t, "UnknownDomainIsRefused", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		st := store.DomainState{Domain: "unknown.example", Status: store.StatusActive, Owner: "owner-a", LeaseToken: 1, Cursor: 3}
		err := s.Checkpoint(ctx, []store.DomainState{st}, nil)
		require.ErrorIs(t, err, store.ErrLeaseLost)
		doms, err := s.Domains(ctx, nil)
		require.NoError(t, err)
		require.Empty(t, doms, "Checkpoint created a domain")
	})

	su.run(t, "InvalidStateChangesNothing", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "a.example", "b.example")
		appendN(t, s, 3)
		held, err := s.AcquireLeases(ctx, "owner-a", longTTL, 10)
		require.NoError(t, err)
		require.Len(t, held, 2)
		good, bad := held[0], held[1]
		good.Cursor = 3

		for name, change := range map[string]func(st *store.DomainState){
			"empty domain": func(st *store.DomainState) { st.Domain = "" },
			"bad status":   func(st *store.DomainState) { st.Status = "bogus" },
		} {
			b := bad
			change(&b)
			err := s.Checkpoint(ctx, []store.DomainState{good, b}, []store.DeadLetter{deadLetter(good.Domain, 1)})
			require.ErrorIs(t, err, store.ErrInvalid, name)
		}
		require.Zero(t, domainState(t, s, good.Domain).Cursor, "a refused checkpoint saved a state")
		dls, err := s.DeadLetters(ctx, store.DeadLetterFilter{})
		require.NoError(t, err)
		require.Empty(t, dls, "a refused checkpoint recorded a dead letter")
	})
}

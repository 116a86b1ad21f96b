package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// deadLetter returns a dead letter for activityID on domain.
func deadLetter(domain string, activityID int64) store.DeadLetter {
	return store.DeadLetter{
		ActivityID:  activityID,
		Domain:      domain,
		Inbox:       "https://" + domain + "/inbox",
		Actor:       "https://local.example/users/alice",
		OrderingKey: fmt.Sprintf("https://local.example/notes/%d", activityID),
		Body:        fmt.Appendf(nil, `{"type":"Create","n":%d}`, activityID),
		Status:      422,
		Reason:      "422 Unprocessable Entity",
		Attempts:    1,
	}
}

// record records dead letters through Checkpoint, leasing their domains to a
// setup owner for the call. No domain may be leased when it is called.
func record(t *testing.T, s store.Store, dls ...store.DeadLetter) {
	t.Helper()
	const owner = "storetest-record"
	ctx := t.Context()
	for _, dl := range dls {
		register(t, s, dl.Domain)
	}
	all, err := s.Domains(ctx, nil)
	require.NoError(t, err)
	held, err := s.AcquireLeases(ctx, owner, longTTL, len(all))
	require.NoError(t, err)
	require.Len(t, held, len(all))
	require.NoError(t, s.Checkpoint(ctx, held, dls))
	require.NoError(t, s.ReleaseLeases(ctx, owner, leasesOf(held)))
}

// deadIDs returns the IDs of dead letters.
func deadIDs(dls []store.DeadLetter) []int64 {
	out := make([]int64, len(dls))
	for i, dl := range dls {
		out[i] = dl.ID
	}
	return out
}

// testDeadLetters checks recording, listing and deleting dead letters.
func testDeadLetters(t *testing.T, su suite) {
	su.run(t, "RoundTrip", func(t *testing.T, s store.Store) {
		given := time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.UTC)
		first := deadLetter("a.example", 7)
		second := deadLetter("a.example", 8)
		second.CreatedAt = given
		second.Status = 0
		second.Attempts = 12
		before := time.Now()
		record(t, s, first, second)
		after := time.Now()

		got, err := s.DeadLetters(t.Context(), store.DeadLetterFilter{})
		require.NoError(t, err)
		require.Len(t, got, 2)
		require.Positive(t, got[0].ID)
		require.Greater(t, got[1].ID, got[0].ID)
		for i, want := range []store.DeadLetter{first, second} {
			g := got[i]
			require.Equal(t, want.ActivityID, g.ActivityID)
			require.Equal(t, want.Domain, g.Domain)
			require.Equal(t, want.Inbox, g.Inbox)
			require.Equal(t, want.Actor, g.Actor)
			require.Equal(t, want.OrderingKey, g.OrderingKey)
			require.Equal(t, want.Body, g.Body)
			require.Equal(t, want.Status, g.Status)
			require.Equal(t, want.Reason, g.Reason)
			require.Equal(t, want.Attempts, g.Attempts)
		}
		requireNear(t, before, after, got[0].CreatedAt, "CreatedAt set by the store")
		requireTimeEqual(t, given.Truncate(time.Microsecond), got[1].CreatedAt, "CreatedAt given")
	})

	su.run(t, "Filter", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		var dls []store.DeadLetter
		for i := range 9 {
			dls = append(dls, deadLetter([]string{"a.example", "b.example", "c.example"}[i%3], int64(i+1)))
		}
		record(t, s, dls...)

		all, err := s.DeadLetters(ctx, store.DeadLetterFilter{})
		require.NoError(t, err)
		require.Len(t, all, 9)
		for i := range all {
			require.Equal(t, int64(i+1), all[i].ActivityID, "not oldest first")
		}

		onlyB, err := s.DeadLetters(ctx, store.DeadLetterFilter{Domain: "b.example"})
		require.NoError(t, err)
		require.Len(t, onlyB, 3)
		for _, dl := range onlyB {
			require.Equal(t, "b.example", dl.Domain)
		}
		none, err := s.DeadLetters(ctx, store.DeadLetterFilter{Domain: "unknown.example"})
		require.NoError(t, err)
		require.Empty(t, none)

		// Paging by AfterID reads everything once, in order.
		var paged []int64
		for after := int64(0); ; {
			page, err := s.DeadLetters(ctx, store.DeadLetterFilter{AfterID: after, Limit: 2})
			require.NoError(t, err)
			require.LessOrEqual(t, len(page), 2)
			if len(page) == 0 {
				break
			}
			require.Greater(t, page[0].ID, after, "DeadLetters returned an ID not after %d", after)
			paged = append(paged, deadIDs(page)...)
			require.LessOrEqual(t, len(paged), len(all), "paging does not end")
			after = page[len(page)-1].ID
		}
		require.Equal(t, deadIDs(all), paged)

		page, err := s.DeadLetters(ctx, store.DeadLetterFilter{Domain: "c.example", AfterID: onlyB[0].ID, Limit: 1})
		require.NoError(t, err)
		require.Len(t, page, 1)
		require.Equal(t, "c.example", page[0].Domain)
		require.Greater(t, page[0].ID, onlyB[0].ID)

		byIDs, err := s.DeadLetters(ctx, store.DeadLetterFilter{IDs: []int64{all[7].ID, all[2].ID, 1 << 40}})
		require.NoError(t, err)
		require.Equal(t, []int64{all[2].ID, all[7].ID}, deadIDs(byIDs), "selected by ID, oldest first, unknown IDs ignored")
		byIDs, err = s.DeadLetters(ctx, store.DeadLetterFilter{IDs: []int64{all[2].ID, all[7].ID}, Domain: "c.example"})
		require.NoError(t, err)
		require.Equal(t, []int64{all[2].ID}, deadIDs(byIDs), "IDs combine with the other fields")

		_, err = s.DeadLetters(ctx, store.DeadLetterFilter{Limit: -1})
		require.ErrorIs(t, err, store.ErrInvalid)
	})

	su.run(t, "ByActivity", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		var dls []store.DeadLetter
		for i := range 12 {
			dl := deadLetter([]string{"a.example", "b.example", "c.example"}[i%3], int64(i%4+1))
			dl.Inbox = fmt.Sprintf("https://%s/users/%d/inbox", dl.Domain, i)
			dls = append(dls, dl)
		}
		record(t, s, dls...)
		all, err := s.DeadLetters(ctx, store.DeadLetterFilter{})
		require.NoError(t, err)
		require.Len(t, all, 12)
		var want []int64 // of activity 2, oldest first
		for _, dl := range all {
			if dl.ActivityID == 2 {
				want = append(want, dl.ID)
			}
		}
		require.Len(t, want, 3)

		got, err := s.DeadLetters(ctx, store.DeadLetterFilter{ActivityID: 2})
		require.NoError(t, err)
		require.Equal(t, want, deadIDs(got), "the activity's dead letters, oldest first")
		for _, dl := range got {
			require.Equal(t, int64(2), dl.ActivityID)
		}
		page, err := s.DeadLetters(ctx, store.DeadLetterFilter{ActivityID: 2, AfterID: want[0], Limit: 1})
		require.NoError(t, err)
		require.Equal(t, want[1:2], deadIDs(page), "pages by AfterID")
		one, err := s.DeadLetters(ctx, store.DeadLetterFilter{ActivityID: 2, Domain: got[1].Domain})
		require.NoError(t, err)
		require.Equal(t, want[1:2], deadIDs(one), "combines with Domain")
		byIDs, err := s.DeadLetters(ctx, store.DeadLetterFilter{ActivityID: 2, IDs: []int64{want[2], all[0].ID}})
		require.NoError(t, err)
		require.Equal(t, want[2:], deadIDs(byIDs), "combines with IDs")
		none, err := s.DeadLetters(ctx, store.DeadLetterFilter{ActivityID: 99})
		require.NoError(t, err)
		require.Empty(t, none)

		_, err = s.DeadLetters(ctx, store.DeadLetterFilter{ActivityID: -1})
		require.ErrorIs(t, err, store.ErrInvalid)
	})

	su.run(t, "DefaultLimit", func(t *testing.T, s store.Store) {
		dls := make([]store.DeadLetter, store.DeadLetterLimitDefault+5)
		for i := range dls {
			dls[i] = deadLetter("a.example", int64(i+1))
		}
		record(t, s, dls...)
		got, err := s.DeadLetters(t.Context(), store.DeadLetterFilter{})
		require.NoError(t, err)
		require.Len(t, got, store.DeadLetterLimitDefault)
		require.EqualValues(t, 1, got[0].ActivityID)
	})

	su.run(t, "Delete", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		record(t, s, deadLetter("a.example", 1), deadLetter("a.example", 2), deadLetter("b.example", 3))
		all, err := s.DeadLetters(ctx, store.DeadLetterFilter{})
		require.NoError(t, err)
		require.Len(t, all, 3)

		n, err := s.DeleteDeadLetters(ctx, []int64{all[0].ID, all[2].ID, all[2].ID + 1000})
		require.NoError(t, err)
		require.Equal(t, 2, n)
		left, err := s.DeadLetters(ctx, store.DeadLetterFilter{})
		require.NoError(t, err)
		require.Equal(t, []int64{all[1].ID}, deadIDs(left))

		n, err = s.DeleteDeadLetters(ctx, []int64{all[0].ID})
		require.NoError(t, err)
		require.Zero(t, n, "deleted a dead letter twice")
		n, err = s.DeleteDeadLetters(ctx, nil)
		require.NoError(t, err)
		require.Zero(t, n)
	})
}

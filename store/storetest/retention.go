package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// testDeadLetterRetention checks PruneDeadLetters of stores that implement
// store.DeadLetterPruner: by age, by a cap per domain, both, and neither.
func testDeadLetterRetention(t *testing.T, su suite) {
	pruner := func(t *testing.T, s store.Store) store.DeadLetterPruner {
		p, ok := s.(store.DeadLetterPruner)
		if !ok {
			t.Skipf("%T does not implement store.DeadLetterPruner", s)
		}
		return p
	}
	old := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	recordAt := func(t *testing.T, s store.Store, at time.Time, domain string, ids ...int64) {
		t.Helper()
		var dls []store.DeadLetter
		for _, id := range ids {
			dl := deadLetter(domain, id)
			dl.CreatedAt = at
			dls = append(dls, dl)
		}
		record(t, s, dls...)
	}
	activityIDs := func(t *testing.T, s store.Store) map[string][]int64 {
		t.Helper()
		dls, err := s.DeadLetters(t.Context(), store.DeadLetterFilter{Limit: 1000})
		require.NoError(t, err)
		out := make(map[string][]int64)
		for _, dl := range dls {
			out[dl.Domain] = append(out[dl.Domain], dl.ActivityID)
		}
		return out
	}

	su.run(t, "ByAge", func(t *testing.T, s store.Store) {
		p := pruner(t, s)
		recordAt(t, s, old, "a.example", 1, 2)
		recordAt(t, s, old.Add(time.Hour), "b.example", 3)
		n, err := p.PruneDeadLetters(t.Context(), old.Add(time.Minute), 0)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		require.Equal(t, map[string][]int64{"b.example": {3}}, activityIDs(t, s))
		n, err = p.PruneDeadLetters(t.Context(), old.Add(time.Minute), 0)
		require.NoError(t, err)
		require.Zero(t, n, "a second run found more to delete")
	})

	su.run(t, "CapPerDomainKeepsTheNewest", func(t *testing.T, s store.Store) {
		p := pruner(t, s)
		recordAt(t, s, old, "a.example", 1, 2, 3, 4)
		recordAt(t, s, old, "b.example", 5, 6)
		recordAt(t, s, old, "a.example", 7)
		n, err := p.PruneDeadLetters(t.Context(), time.Time{}, 2)
		require.NoError(t, err)
		require.Equal(t, 3, n)
		require.Equal(t, map[string][]int64{"a.example": {4, 7}, "b.example": {5, 6}}, activityIDs(t, s))
	})

	su.run(t, "AgeAndCapTogether", func(t *testing.T, s store.Store) {
		p := pruner(t, s)
		recordAt(t, s, old, "a.example", 1)
		recordAt(t, s, old.Add(time.Hour), "a.example", 2, 3, 4)
		n, err := p.PruneDeadLetters(t.Context(), old.Add(time.Minute), 2)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		require.Equal(t, map[string][]int64{"a.example": {3, 4}}, activityIDs(t, s))
	})

	su.run(t, "NothingToDo", func(t *testing.T, s store.Store) {
		p := pruner(t, s)
		recordAt(t, s, old, "a.example", 1, 2)
		n, err := p.PruneDeadLetters(t.Context(), time.Time{}, 0)
		require.NoError(t, err)
		require.Zero(t, n)
		_, err = p.PruneDeadLetters(t.Context(), time.Time{}, -1)
		require.ErrorIs(t, err, store.ErrInvalid)
		require.Equal(t, map[string][]int64{"a.example": {1, 2}}, activityIDs(t, s))
	})
}

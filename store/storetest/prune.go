package storetest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// testPrune checks that Prune deletes only what every live domain settled,
// and fast-forwards dead domains left behind in plain sight.
func testPrune(t *testing.T, su suite) {
	su.run(t, "EmptyStore", func(t *testing.T, s store.Store) {
		res, err := s.Prune(t.Context())
		require.NoError(t, err)
		require.Zero(t, res.Below)
		require.Zero(t, res.Deleted)
		require.Empty(t, res.FastForwarded)
	})

	su.run(t, "BelowLowestLiveCursor", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "active.example", "paused.example", "dead-behind.example", "dead-ahead.example")
		all := appendN(t, s, 10)
		cursors := map[string]int64{
			"active.example":      all[5],
			"paused.example":      all[2],
			"dead-behind.example": all[0],
			"dead-ahead.example":  all[7],
		}
		setStates(t, s, func(st *store.DomainState) {
			st.Cursor = cursors[st.Domain]
			switch st.Domain {
			case "paused.example":
				st.Status = store.StatusPaused
			case "dead-behind.example", "dead-ahead.example":
				st.Status = store.StatusDead
			}
		})

		revBehind := domainState(t, s, "dead-behind.example").Revision
		revAhead := domainState(t, s, "dead-ahead.example").Revision
		res, err := s.Prune(ctx)
		require.NoError(t, err)
		require.Equal(t, all[2], res.Below, "pruned past a paused domain's cursor")
		require.Equal(t, revBehind+1, domainState(t, s, "dead-behind.example").Revision, "a fast-forward is a change its owner must take in")
		require.Equal(t, revAhead, domainState(t, s, "dead-ahead.example").Revision)
		require.EqualValues(t, 3, res.Deleted)
		require.Equal(t, []store.FastForward{{Domain: "dead-behind.example", From: all[0], To: all[2]}}, res.FastForwarded)

		acts, err := s.Activities(ctx, 0, 100)
		require.NoError(t, err)
		require.Equal(t, all[3:], ids(acts))
		require.Equal(t, all[2], domainState(t, s, "dead-behind.example").Cursor, "fast-forward not saved")
		require.Equal(t, store.StatusDead, domainState(t, s, "dead-behind.example").Status)
		require.Equal(t, all[7], domainState(t, s, "dead-ahead.example").Cursor, "a dead domain ahead was moved")
		require.Equal(t, all[5], domainState(t, s, "active.example").Cursor)
		require.Equal(t, all[2], domainState(t, s, "paused.example").Cursor)

		again, err := s.Prune(ctx)
		require.NoError(t, err)
		require.Equal(t, all[2], again.Below)
		require.Zero(t, again.Deleted, "a second prune deleted more")
		require.Empty(t, again.FastForwarded)
	})

	su.run(t, "NoLiveDomainPrunesToHead", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		register(t, s, "dead.example")
		all := appendN(t, s, 5)
		setStates(t, s, func(st *store.DomainState) {
			st.Cursor = all[1]
			st.Status = store.StatusDead
		})

		res, err := s.Prune(ctx)
		require.NoError(t, err)
		require.Equal(t, all[4], res.Below)
		require.EqualValues(t, 5, res.Deleted)
		require.Equal(t, []store.FastForward{{Domain: "dead.example", From: all[1], To: all[4]}}, res.FastForwarded)
		require.Equal(t, all[4], domainState(t, s, "dead.example").Cursor)
		acts, err := s.Activities(ctx, 0, 100)
		require.NoError(t, err)
		require.Empty(t, acts)

		// New activities are kept for a domain registered after the prune.
		id := appendOne(t, s, "new.example")
		res, err = s.Prune(ctx)
		require.NoError(t, err)
		require.Zero(t, res.Deleted, "pruned an activity a new domain has not settled")
		acts, err = s.Activities(ctx, 0, 100)
		require.NoError(t, err)
		require.Equal(t, []int64{id}, ids(acts))
	})

	su.run(t, "WithoutDomains", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		all := appendN(t, s, 4)
		res, err := s.Prune(ctx)
		require.NoError(t, err)
		require.Equal(t, all[3], res.Below)
		require.EqualValues(t, 4, res.Deleted)
		again, err := s.Prune(ctx)
		require.NoError(t, err)
		require.Zero(t, again.Deleted)
	})

	// More rows than a store may delete in one statement: stores that
	// delete in batches go on to the end, and count every row.
	su.run(t, "ManyRows", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		const n = 12001
		var last int64
		for left := n; left > 0; left -= 1000 {
			got := appendN(t, s, min(left, 1000))
			last = got[len(got)-1]
		}
		res, err := s.Prune(ctx)
		require.NoError(t, err)
		require.Equal(t, last, res.Below)
		require.EqualValues(t, n, res.Deleted)
		acts, err := s.Activities(ctx, 0, 10)
		require.NoError(t, err)
		require.Empty(t, acts)
	})
}

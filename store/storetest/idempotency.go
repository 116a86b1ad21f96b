package storetest

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// keyed returns an activity addressed to domains with an idempotency key
// remembered for window.
func keyed(key string, window time.Duration, domains ...string) store.NewActivity {
	a := activity(domains...)
	a.IdempotencyKey = key
	a.IdempotencyWindow = window
	return a
}

// logLen returns how many activities the log holds.
func logLen(t *testing.T, s store.Store) int {
	t.Helper()
	acts, err := s.Activities(t.Context(), 0, 10000)
	require.NoError(t, err)
	return len(acts)
}

// appendAll appends activities and returns what the store did with them.
func appendAll(t *testing.T, s store.Store, activities ...store.NewActivity) []store.Appended {
	t.Helper()
	res, err := s.Append(t.Context(), activities)
	require.NoError(t, err)
	require.Len(t, res, len(activities))
	return res
}

// testIdempotency checks that an activity appended again with a key still
// remembered is not written and gets the first one's ID.
func testIdempotency(t *testing.T, su suite) {
	su.run(t, "DuplicateReturnsFirstID", func(t *testing.T, s store.Store) {
		first := appendAll(t, s, keyed("note-1-create", time.Hour, "a.example"))
		require.False(t, first[0].Duplicate)
		again := appendAll(t, s, keyed("note-1-create", time.Hour, "b.example"))
		require.Equal(t, store.Appended{ID: first[0].ID, Duplicate: true}, again[0], "a duplicate gets the first activity's ID")
		require.Equal(t, 1, logLen(t, s), "a duplicate wrote an activity")

		// Other keys and no key are appended as usual.
		other := appendAll(t, s, keyed("note-2-create", time.Hour, "a.example"), activity("a.example"), activity("a.example"))
		for i, r := range other {
			require.False(t, r.Duplicate, i)
		}
		require.Greater(t, other[0].ID, first[0].ID)
		require.Greater(t, other[1].ID, other[0].ID)
		require.Greater(t, other[2].ID, other[1].ID)
		require.Equal(t, 4, logLen(t, s))
	})

	su.run(t, "DuplicateInOneBatch", func(t *testing.T, s store.Store) {
		got := appendAll(t, s, keyed("k", time.Hour, "a.example"), activity("a.example"), keyed("k", time.Hour, "a.example"))
		require.Equal(t, store.Appended{ID: got[0].ID, Duplicate: true}, got[2], "the second with a key is a duplicate of the first")
		require.Greater(t, got[1].ID, got[0].ID)
		acts, err := s.Activities(t.Context(), 0, 10)
		require.NoError(t, err)
		require.Equal(t, []int64{got[0].ID, got[1].ID}, ids(acts))
	})

	su.run(t, "ConcurrentDuplicates", func(t *testing.T, s store.Store) {
		const callers = 16
		ctx := t.Context()
		var (
			wg  sync.WaitGroup
			got = make([]store.Appended, callers)
		)
		start := make(chan struct{})
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res, err := s.Append(ctx, []store.NewActivity{keyed("same-key", time.Hour, "a.example")})
				if !(err == nil && len(res) == 1) {
					t.Errorf("caller %d: %v, %v", i, res, err)
					return
				}
				got[i] = res[0]
			}()
		}
		close(start)
		wg.Wait()
		require.Equal(t, 1, logLen(t, s), "exactly one activity is written")
		acts, err := s.Activities(ctx, 0, 10)
		require.NoError(t, err)
		writers := 0
		for i, r := range got {
			require.Equal(t, acts[0].ID, r.ID, "caller %d got another ID", i)
			if !r.Duplicate {
				writers++
			}
		}
		require.Equal(t, 1, writers, "one caller wrote, the others were told they were duplicates")
	})

	su.run(t, "KeyOutlivesPrune", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		first := appendAll(t, s, keyed("k", time.Hour))
		res, err := s.Prune(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 1, res.Deleted, "with no domain, everything settled is pruned")
		require.Zero(t, res.ExpiredKeys)
		again := appendAll(t, s, keyed("k", time.Hour))
		require.Equal(t, store.Appended{ID: first[0].ID, Duplicate: true}, again[0],
			"the key is remembered for its window, not as long as its activity")
		require.Zero(t, logLen(t, s))
	})

	su.run(t, "KeysExpire", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		const window = 50 * time.Millisecond
		first := appendAll(t, s, keyed("short", window), keyed("long", time.Hour))
		var later []store.Appended
		require.Eventually(t, func() bool {
			later = appendAll(t, s, keyed("short", time.Hour))
			return !later[0].Duplicate
		}, waitFor, tick, "an expired key makes a new activity")
		require.Greater(t, later[0].ID, first[1].ID)
		// Replaced, the key is remembered again from its new append.
		again := appendAll(t, s, keyed("short", time.Hour))
		require.Equal(t, store.Appended{ID: later[0].ID, Duplicate: true}, again[0])

		// An expired key that was never reused is deleted by Prune.
		appendAll(t, s, keyed("gone", time.Millisecond))
		var deleted int64
		require.Eventually(t, func() bool {
			res, err := s.Prune(ctx)
			require.NoError(t, err)
			deleted += res.ExpiredKeys
			return deleted > 0
		}, waitFor, tick)
		require.EqualValues(t, 1, deleted, "only the expired key is deleted")
		long := appendAll(t, s, keyed("long", time.Hour))
		require.Equal(t, store.Appended{ID: first[1].ID, Duplicate: true}, long[0], "a key within its window survives Prune")
	})

	su.run(t, "BadKeys", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		_, err := s.Append(ctx, []store.NewActivity{keyed(strings.Repeat("k", store.IdempotencyKeyMaxLen+1), time.Hour)})
		require.ErrorIs(t, err, store.ErrInvalid)
		require.ErrorContains(t, err, "idempotency key of 257 bytes")
		_, err = s.Append(ctx, []store.NewActivity{keyed("k", 0)})
		require.ErrorIs(t, err, store.ErrInvalid)
		require.Zero(t, logLen(t, s), "a refused batch wrote something")
		appendAll(t, s, keyed(strings.Repeat("k", store.IdempotencyKeyMaxLen), time.Hour))
	})
}

// TxFunc opens a caller's transaction on the database of the store it was
// returned with, for RunTx. commit and rollback end it.
type TxFunc func(t *testing.T) (tx store.Tx, commit, rollback func() error)

// RunTx runs the conformance cases of transactional appends (store.Tx)
// against the stores made by newStore, which returns a new, empty store
// and a way to open transactions on its database.
func RunTx(t *testing.T, newStore func(t *testing.T) (store.Store, TxFunc)) {
	t.Helper()
	run := func(name string, fn func(t *testing.T, s store.Store, begin TxFunc)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, begin := newStore(t)
			fn(t, s, begin)
		})
	}

	run("DuplicateOfCommitted", func(t *testing.T, s store.Store, begin TxFunc) {
		ctx := t.Context()
		first := appendAll(t, s, keyed("k", time.Hour, "a.example"))
		tx, commit, _ := begin(t)
		res, err := tx.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example"), activity("a.example")})
		require.NoError(t, err)
		require.True(t, res[0].Duplicate)
		require.False(t, res[1].Duplicate)
		require.NoError(t, commit())
		acts := readEventually(t, s, 2)
		require.Equal(t, first[0].ID, acts[0].ID, "the duplicate in the transaction was written")
	})

	run("DuplicateInSameTx", func(t *testing.T, s store.Store, begin TxFunc) {
		ctx := t.Context()
		tx, commit, _ := begin(t)
		res, err := tx.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example")})
		require.NoError(t, err)
		require.False(t, res[0].Duplicate)
		res, err = tx.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example"), keyed("k", time.Hour, "a.example")})
		require.NoError(t, err)
		require.True(t, res[0].Duplicate)
		require.True(t, res[1].Duplicate)
		require.NoError(t, commit())
		readEventually(t, s, 1)
		// A plain append after it is a duplicate of the transaction's.
		again := appendAll(t, s, keyed("k", time.Hour, "a.example"))
		require.Equal(t, 1, logLen(t, s))
		acts, err := s.Activities(ctx, 0, 10)
		require.NoError(t, err)
		require.Equal(t, store.Appended{ID: acts[0].ID, Duplicate: true}, again[0])
	})

	run("SuspendedReported", func(t *testing.T, s store.Store, begin TxFunc) {
		ctx := t.Context()
		register(t, s, "b.example")
		_, err := s.ChangeDomain(ctx, "b.example", store.DomainChange{Status: store.StatusSuspended})
		require.NoError(t, err)
		tx, commit, _ := begin(t)
		res, err := tx.Append(ctx, []store.NewActivity{activity("a.example", "b.example"), activity("a.example")})
		require.NoError(t, err)
		require.NoError(t, commit())
		require.Equal(t, []string{"b.example"}, res[0].Suspended)
		require.Empty(t, res[1].Suspended)
		single, commit, _ := begin(t)
		res, err = single.Append(ctx, []store.NewActivity{activity("b.example")})
		require.NoError(t, err)
		require.NoError(t, commit())
		require.Equal(t, []string{"b.example"}, res[0].Suspended)
	})

	run("RolledBackFreesKey", func(t *testing.T, s store.Store, begin TxFunc) {
		ctx := t.Context()
		tx, _, rollback := begin(t)
		_, err := tx.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example")})
		require.NoError(t, err)
		require.NoError(t, rollback())
		got := appendAll(t, s, keyed("k", time.Hour, "a.example"))
		require.False(t, got[0].Duplicate, "a rolled back transaction took the key")
		require.NotZero(t, got[0].ID)
		require.Equal(t, 1, logLen(t, s))
	})

	run("ConcurrentTransactions", func(t *testing.T, s store.Store, begin TxFunc) {
		// Two callers enqueue with one key, each in its own transaction,
		// at the same time: one activity is written. A store may serialise
		// the two (then the second append waits for the first commit), so
		// each runs in its own goroutine.
		const callers = 4
		ctx := t.Context()
		var wg sync.WaitGroup
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tx, commit, rollback := begin(t)
				if _, err := tx.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example")}); err != nil {
					t.Errorf("caller %d: %v", i, err)
					_ = rollback()
					return
				}
				if err := commit(); err != nil {
					t.Errorf("caller %d: commit: %v", i, err)
				}
			}()
		}
		wg.Wait()
		readEventually(t, s, 1)
		got := appendAll(t, s, keyed("k", time.Hour, "a.example"), activity("a.example"))
		acts := readEventually(t, s, 2)
		require.Equal(t, store.Appended{ID: acts[0].ID, Duplicate: true}, got[0], "the key's activity is the one written")
		require.Equal(t, store.Appended{ID: acts[1].ID}, got[1])
	})
}

// readEventually waits until the log holds n activities, checks it holds
// no more, and returns them.
func readEventually(t *testing.T, s store.Store, n int) []store.Activity {
	t.Helper()
	var acts []store.Activity
	require.Eventually(t, func() bool {
		var err error
		acts, err = s.Activities(t.Context(), 0, 10000)
		require.NoError(t, err)
		return len(acts) >= n
	}, waitFor, tick)
	require.Len(t, acts, n, "more activities than appended")
	return acts
}

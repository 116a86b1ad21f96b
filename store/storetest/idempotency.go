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

// testIdempotency checks that an activity appended again with a key still
// remembered is not written and gets the first one's ID.
func testIdempotency(t *testing.T, su suite) {
	su.run(t, "DuplicateReturnsFirstID", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		first, err := s.Append(ctx, []store.NewActivity{keyed("note-1-create", time.Hour, "a.example")})
		require.NoError(t, err)
		again, err := s.Append(ctx, []store.NewActivity{keyed("note-1-create", time.Hour, "b.example")})
		require.NoError(t, err)
		require.Equal(t, first, again, "a duplicate gets the first activity's ID")
		require.Equal(t, 1, logLen(t, s), "a duplicate wrote an activity")
		_, err = s.Domains(ctx, []string{"b.example"})
		require.NoError(t, err)

		// Other keys and no key are appended as usual.
		other, err := s.Append(ctx, []store.NewActivity{keyed("note-2-create", time.Hour, "a.example"), activity("a.example"), activity("a.example")})
		require.NoError(t, err)
		require.Greater(t, other[0], first[0])
		require.Greater(t, other[1], other[0])
		require.Greater(t, other[2], other[1])
		require.Equal(t, 4, logLen(t, s))
	})

	su.run(t, "DuplicateInOneBatch", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		got, err := s.Append(ctx, []store.NewActivity{
			keyed("k", time.Hour, "a.example"), activity("a.example"), keyed("k", time.Hour, "a.example"),
		})
		require.NoError(t, err)
		require.Len(t, got, 3)
		require.Equal(t, got[0], got[2], "the second with a key is a duplicate of the first")
		require.Greater(t, got[1], got[0])
		acts, err := s.Activities(ctx, 0, 10)
		require.NoError(t, err)
		require.Equal(t, []int64{got[0], got[1]}, ids(acts))
	})

	su.run(t, "ConcurrentDuplicates", func(t *testing.T, s store.Store) {
		const callers = 16
		ctx := t.Context()
		var (
			wg  sync.WaitGroup
			got = make([]int64, callers)
		)
		start := make(chan struct{})
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ids, err := s.Append(ctx, []store.NewActivity{keyed("same-key", time.Hour, "a.example")})
				if !(err == nil && len(ids) == 1) {
					t.Errorf("caller %d: %v, %v", i, ids, err)
					return
				}
				got[i] = ids[0]
			}()
		}
		close(start)
		wg.Wait()
		require.Equal(t, 1, logLen(t, s), "exactly one activity is written")
		acts, err := s.Activities(ctx, 0, 10)
		require.NoError(t, err)
		for i, id := range got {
			require.Equal(t, acts[0].ID, id, "caller %d got another ID", i)
		}
	})

	su.run(t, "KeyOutlivesPrune", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		first, err := s.Append(ctx, []store.NewActivity{keyed("k", time.Hour)})
		require.NoError(t, err)
		res, err := s.Prune(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 1, res.Deleted, "with no domain, everything settled is pruned")
		require.Zero(t, res.ExpiredKeys)
		again, err := s.Append(ctx, []store.NewActivity{keyed("k", time.Hour)})
		require.NoError(t, err)
		require.Equal(t, first, again, "the key is remembered for its window, not as long as its activity")
		require.Zero(t, logLen(t, s))
	})

	su.run(t, "KeysExpire", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		const window = 50 * time.Millisecond
		first, err := s.Append(ctx, []store.NewActivity{keyed("short", window), keyed("long", time.Hour)})
		require.NoError(t, err)
		var later []int64
		require.Eventually(t, func() bool {
			later, err = s.Append(ctx, []store.NewActivity{keyed("short", time.Hour)})
			require.NoError(t, err)
			return later[0] != first[0]
		}, waitFor, tick, "an expired key makes a new activity")
		require.Greater(t, later[0], first[1])
		// Replaced, the key is remembered again from its new append.
		again, err := s.Append(ctx, []store.NewActivity{keyed("short", time.Hour)})
		require.NoError(t, err)
		require.Equal(t, later, again)

		// An expired key that was never reused is deleted by Prune.
		_, err = s.Append(ctx, []store.NewActivity{keyed("gone", time.Millisecond)})
		require.NoError(t, err)
		var deleted int64
		require.Eventually(t, func() bool {
			res, err := s.Prune(ctx)
			require.NoError(t, err)
			deleted += res.ExpiredKeys
			return deleted > 0
		}, waitFor, tick)
		require.EqualValues(t, 1, deleted, "only the expired key is deleted")
		long, err := s.Append(ctx, []store.NewActivity{keyed("long", time.Hour)})
		require.NoError(t, err)
		require.Equal(t, first[1], long[0], "a key within its window survives Prune")
	})

	su.run(t, "BadKeys", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		_, err := s.Append(ctx, []store.NewActivity{keyed(strings.Repeat("k", store.IdempotencyKeyMaxLen+1), time.Hour)})
		require.ErrorIs(t, err, store.ErrInvalid)
		require.ErrorContains(t, err, "idempotency key of 257 bytes")
		_, err = s.Append(ctx, []store.NewActivity{keyed("k", 0)})
		require.ErrorIs(t, err, store.ErrInvalid)
		require.Zero(t, logLen(t, s), "a refused batch wrote something")
		_, err = s.Append(ctx, []store.NewActivity{keyed(strings.Repeat("k", store.IdempotencyKeyMaxLen), time.Hour)})
		require.NoError(t, err)
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
		first, err := s.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example")})
		require.NoError(t, err)
		tx, commit, _ := begin(t)
		require.NoError(t, tx.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example"), activity("a.example")}))
		require.NoError(t, commit())
		acts := readEventually(t, s, 2)
		require.Equal(t, first[0], acts[0].ID, "the duplicate in the transaction was written")
	})

	run("DuplicateInSameTx", func(t *testing.T, s store.Store, begin TxFunc) {
		ctx := t.Context()
		tx, commit, _ := begin(t)
		require.NoError(t, tx.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example")}))
		require.NoError(t, tx.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example"), keyed("k", time.Hour, "a.example")}))
		require.NoError(t, commit())
		readEventually(t, s, 1)
		// A plain append after it is a duplicate of the transaction's.
		again, err := s.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example")})
		require.NoError(t, err)
		require.Equal(t, 1, logLen(t, s))
		acts, err := s.Activities(ctx, 0, 10)
		require.NoError(t, err)
		require.Equal(t, acts[0].ID, again[0])
	})

	run("RolledBackFreesKey", func(t *testing.T, s store.Store, begin TxFunc) {
		ctx := t.Context()
		tx, _, rollback := begin(t)
		require.NoError(t, tx.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example")}))
		require.NoError(t, rollback())
		got, err := s.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example")})
		require.NoError(t, err)
		require.NotZero(t, got[0])
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
				if err := tx.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example")}); err != nil {
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
		got, err := s.Append(ctx, []store.NewActivity{keyed("k", time.Hour, "a.example"), activity("a.example")})
		require.NoError(t, err)
		acts := readEventually(t, s, 2)
		require.Equal(t, acts[0].ID, got[0], "the key's activity is the one written")
		require.Equal(t, acts[1].ID, got[1])
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

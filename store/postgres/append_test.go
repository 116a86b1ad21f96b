package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/postgres"
)

func newActivity(domains ...string) store.NewActivity {
	a := store.NewActivity{
		Actor:       "https://local.example/users/alice",
		OrderingKey: "https://local.example/notes/1",
		Body:        []byte(`{"type":"Create"}`),
		Domains:     domains,
	}
	for _, d := range domains {
		a.Inboxes = append(a.Inboxes, "https://"+d+"/inbox")
	}
	return a
}

func readAll(t *testing.T, s store.Store, after int64) []int64 {
	t.Helper()
	acts, err := s.Activities(t.Context(), after, 10000)
	require.NoError(t, err)
	out := make([]int64, len(acts))
	for i, a := range acts {
		out[i] = a.ID
	}
	return out
}

func TestAppendTx(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			s, db := newStore(t, m.mode, nil)
			ctx := t.Context()

			// Committed: appended, notified, domain registered.
			var committed []int64
			err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
				var err error
				committed, err = s.AppendTx(ctx, tx, []store.NewActivity{newActivity("a.example"), newActivity("b.example")})
				return err
			})
			require.NoError(t, err)
			require.Len(t, committed, 2)
			require.Equal(t, committed, readAll(t, s, 0))
			h, err := s.Head(ctx)
			require.NoError(t, err)
			require.Equal(t, committed[1], h)
			doms, err := s.Domains(ctx, nil)
			require.NoError(t, err)
			require.Len(t, doms, 2)
			for _, d := range doms {
				require.Less(t, d.Cursor, committed[0], "%s is past its first activity", d.Domain)
			}

			// Rolled back: nothing appended, and readers move on past the
			// reserved IDs.
			tx, err := db.Pool.Begin(ctx)
			require.NoError(t, err)
			rolled, err := s.AppendTx(ctx, tx, []store.NewActivity{newActivity("c.example")})
			require.NoError(t, err)
			require.NoError(t, tx.Rollback(ctx))
			next := appendOne(t, s)
			require.Greater(t, next, rolled[0])
			require.Equal(t, append(slices.Clone(committed), next), readAll(t, s, 0))
			require.NotContains(t, readAll(t, s, 0), rolled[0])

			// A savepoint (a nested pgx.Tx) works too.
			err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
				return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
					_, err := s.AppendTx(ctx, sp, []store.NewActivity{newActivity()})
					return err
				})
			})
			require.NoError(t, err)
			require.Len(t, readAll(t, s, next), 1)
		})
	}
}

func TestAppendTxRefusesNilTransaction(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, 0, nil)
	_, err := s.AppendTx(t.Context(), nil, []store.NewActivity{newActivity()})
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = s.Tx(nil).Append(t.Context(), []store.NewActivity{newActivity()})
	require.ErrorIs(t, err, store.ErrInvalid)
	h, err := s.Head(t.Context())
	require.NoError(t, err)
	require.Zero(t, h)
}

func appendOne(t *testing.T, s store.Store, domains ...string) int64 {
	t.Helper()
	ids, err := s.Append(t.Context(), []store.NewActivity{newActivity(domains...)})
	require.NoError(t, err)
	require.Len(t, ids, 1)
	return ids[0]
}

// TestReaderWaitsForOpenTransaction holds a transaction open with a lower ID
// while later appends commit: neither Activities nor Head may pass the open
// ID, and a domain registered meanwhile must not start past it.
func TestReaderWaitsForOpenTransaction(t *testing.T) {
	t.Parallel()
	for _, outcome := range []string{"commit", "rollback"} {
		t.Run(outcome, func(t *testing.T) {
			t.Parallel()
			s, db := newStore(t, 0, nil)
			ctx := t.Context()
			before := appendOne(t, s)

			tx, err := db.Pool.Begin(ctx)
			require.NoError(t, err)
			defer tx.Rollback(context.Background()) //nolint:errcheck // ends the test's transaction on failure
			held, err := s.AppendTx(ctx, tx, []store.NewActivity{newActivity("late.example")})
			require.NoError(t, err)
			require.Greater(t, held[0], before)

			// Later appends, own and transactional, commit first.
			after1 := appendOne(t, s, "other.example")
			var after2 []int64
			require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx2 pgx.Tx) error {
				after2, err = s.AppendTx(ctx, tx2, []store.NewActivity{newActivity()})
				return err
			}))
			require.NoError(t, s.RegisterDomains(ctx, []store.DomainRegistration{{Domain: "new.example"}}))
			require.Greater(t, after1, held[0])
			require.Greater(t, after2[0], after1)

			open, err := s.OpenTransactions(ctx)
			require.NoError(t, err)
			require.Equal(t, 1, open.Count)
			require.Equal(t, held[0], open.FirstID)
			require.WithinDuration(t, time.Now(), open.Oldest, 5*time.Second)

			require.Equal(t, []int64{before}, readAll(t, s, 0), "the reader passed an open transaction's ID")
			h, err := s.Head(ctx)
			require.NoError(t, err)
			require.Equal(t, before, h, "the head passed an open transaction's ID")
			for _, d := range []string{"other.example", "new.example", "late.example"} {
				st, err := s.Domains(ctx, []string{d})
				require.NoError(t, err)
				require.Len(t, st, 1, d)
				require.LessOrEqual(t, st[0].Cursor, before, "%s starts past the open transaction", d)
			}

			want := []int64{before, after1, after2[0]}
			if outcome == "commit" {
				require.NoError(t, tx.Commit(ctx))
				want = []int64{before, held[0], after1, after2[0]}
			} else {
				require.NoError(t, tx.Rollback(ctx))
			}
			require.Equal(t, want, readAll(t, s, 0))
			open, err = s.OpenTransactions(ctx)
			require.NoError(t, err)
			require.Equal(t, postgres.OpenTransactions{}, open)
			h, err = s.Head(ctx)
			require.NoError(t, err)
			require.Equal(t, after2[0], h)
		})
	}
}

// TestConcurrentAppendsNeverSkip appends from many goroutines, own appends
// and transactional ones that commit or roll back after a random pause,
// while readers page through the log by their last seen ID: every reader
// must see exactly the committed IDs, in order.
func TestConcurrentAppendsNeverSkip(t *testing.T) {
	t.Parallel()
	s, db := newStoreWith(t, pgtest.Options{MaxConns: 12})
	ctx := t.Context()
	const (
		writers = 8
		rounds  = 25
		readers = 2
	)
	var (
		mu        sync.Mutex
		committed []int64
	)
	done := make(chan struct{})
	var g errgroup.Group
	seen := make([][]int64, readers)
	for r := range readers {
		g.Go(func() error {
			var after int64
			finished := false
			for {
				acts, err := s.Activities(ctx, after, 5)
				if err != nil {
					return err
				}
				for _, a := range acts {
					seen[r] = append(seen[r], a.ID)
					after = a.ID
				}
				if len(acts) > 0 {
					continue
				}
				if finished {
					return nil
				}
				select {
				case <-done:
					finished = true
				case <-time.After(time.Millisecond):
				}
			}
		})
	}
	var w errgroup.Group
	for i := range writers {
		w.Go(func() error {
			for round := range rounds {
				batch := []store.NewActivity{newActivity(fmt.Sprintf("d%d.example", round%5))}
				if (i+round)%2 == 0 {
					ids, err := s.Append(ctx, batch)
					if err != nil {
						return err
					}
					mu.Lock()
					committed = append(committed, ids...)
					mu.Unlock()
					continue
				}
				tx, err := db.Pool.Begin(ctx)
				if err != nil {
					return err
				}
				ids, err := s.AppendTx(ctx, tx, append(batch, newActivity()))
				if err != nil {
					_ = tx.Rollback(ctx)
					return err
				}
				time.Sleep(time.Duration((i*7+round*3)%5) * time.Millisecond) // vary commit order
				if round%5 == 4 {
					if err := tx.Rollback(ctx); err != nil {
						return err
					}
					continue
				}
				if err := tx.Commit(ctx); err != nil {
					return err
				}
				mu.Lock()
				committed = append(committed, ids...)
				mu.Unlock()
			}
			return nil
		})
	}
	require.NoError(t, w.Wait())
	close(done)
	require.NoError(t, g.Wait())

	slices.Sort(committed)
	require.Len(t, slices.Compact(slices.Clone(committed)), len(committed), "an ID was assigned twice")
	for r := range readers {
		require.Equal(t, committed, seen[r], "reader %d skipped or repeated activities", r)
	}
}

// TestAppendTxWithEveryPoolConnectionBusy holds the pool's only connection
// in the caller's transaction: AppendTx reserves its IDs on the store's own
// connections, so it cannot wait for a connection only its caller's commit
// would free.
func TestAppendTxWithEveryPoolConnectionBusy(t *testing.T) {
	t.Parallel()
	s, db := newStoreWith(t, pgtest.Options{MaxConns: 1})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		_, err := s.AppendTx(ctx, tx, []store.NewActivity{newActivity("a.example")})
		return err
	})
	require.NoError(t, err)
	require.Len(t, readAll(t, s, 0), 1)
}

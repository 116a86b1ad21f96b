package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/store"
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

// readN waits until the activities after after are n (activities appended
// in a transaction are numbered soon after its commit) and returns them.
func readN(t *testing.T, s store.Store, after int64, n int) []store.Activity {
	t.Helper()
	var acts []store.Activity
	require.Eventually(t, func() bool {
		var err error
		acts, err = s.Activities(t.Context(), after, 10000)
		require.NoError(t, err)
		return len(acts) >= n
	}, 10*time.Second, 2*time.Millisecond, "waiting for %d activities after %d", n, after)
	require.Len(t, acts, n)
	return acts
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

			// Committed: appended, numbered after what came before, domains
			// registered before their first activity.
			before := appendOne(t, s)
			err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
				return s.AppendTx(ctx, tx, []store.NewActivity{newActivity("a.example"), newActivity("b.example")})
			})
			require.NoError(t, err)
			acts := readN(t, s, 0, 3)
			require.Equal(t, before, acts[0].ID)
			committed := ids(acts[1:])
			require.Equal(t, []int64{before + 1, before + 2}, committed)
			require.Equal(t, []string{"a.example"}, acts[1].Domains, "the batch kept its order")
			require.Equal(t, []string{"b.example"}, acts[2].Domains)
			h, err := s.Head(ctx)
			require.NoError(t, err)
			require.Equal(t, committed[1], h)
			doms, err := s.Domains(ctx, nil)
			require.NoError(t, err)
			require.Len(t, doms, 2)
			for _, d := range doms {
				require.Less(t, d.Cursor, committed[0], "%s is past its first activity", d.Domain)
			}

			// Rolled back: nothing appended, nothing registered, and the
			// next ID follows the last one readers saw.
			tx, err := db.Pool.Begin(ctx)
			require.NoError(t, err)
			require.NoError(t, s.AppendTx(ctx, tx, []store.NewActivity{newActivity("c.example")}))
			require.NoError(t, tx.Rollback(ctx))
			next := appendOne(t, s)
			require.Equal(t, committed[1]+1, next)
			require.Equal(t, append([]int64{before}, append(committed, next)...), readAll(t, s, 0))
			got, err := s.Domains(ctx, []string{"c.example"})
			require.NoError(t, err)
			require.Empty(t, got, "a rolled-back transaction registered its domain")

			// A savepoint (a nested pgx.Tx) works too.
			err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
				return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
					return s.AppendTx(ctx, sp, []store.NewActivity{newActivity()})
				})
			})
			require.NoError(t, err)
			require.Equal(t, []int64{next + 1}, ids(readN(t, s, next, 1)))

			// A rolled-back savepoint takes its activities with it, and the
			// transaction's others stay.
			err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
				if err := s.AppendTx(ctx, tx, []store.NewActivity{newActivity("kept.example")}); err != nil {
					return err
				}
				sp, err := tx.Begin(ctx)
				if err != nil {
					return err
				}
				if err := s.AppendTx(ctx, sp, []store.NewActivity{newActivity("dropped.example")}); err != nil {
					return err
				}
				return sp.Rollback(ctx)
			})
			require.NoError(t, err)
			acts = readN(t, s, next+1, 1)
			require.Equal(t, []string{"kept.example"}, acts[0].Domains)
		})
	}
}

func ids(acts []store.Activity) []int64 {
	out := make([]int64, len(acts))
	for i, a := range acts {
		out[i] = a.ID
	}
	return out
}

func TestAppendTxRefusesNilTransaction(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, 0, nil)
	err := s.AppendTx(t.Context(), nil, []store.NewActivity{newActivity()})
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = s.Tx(nil).Append(t.Context(), []store.NewActivity{newActivity()})
	require.ErrorIs(t, err, store.ErrInvalid)
	h, err := s.Head(t.Context())
	require.NoError(t, err)
	require.Zero(t, h)
}

func appendOne(t *testing.T, s store.Store, domains ...string) int64 {
	t.Helper()
	res, err := s.Append(t.Context(), []store.NewActivity{newActivity(domains...)})
	require.NoError(t, err)
	require.Len(t, res, 1)
	return res[0].ID
}

// TestOpenTransactionHoldsBackNothing holds a caller's transaction open
// with a staged activity while later appends, own and transactional,
// commit: readers see those at once, and the held activity, once its
// transaction commits, gets an ID above all of them, so a reader that has
// moved on still reads it; its domain is registered no later than that.
func TestOpenTransactionHoldsBackNothing(t *testing.T) {
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
			held := newActivity("late.example")
			held.OrderingKey = "held"
			require.NoError(t, s.AppendTx(ctx, tx, []store.NewActivity{held}))

			// Later appends, own and transactional, commit first, and
			// readers see them while the first transaction is open.
			after1 := appendOne(t, s, "other.example")
			require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx2 pgx.Tx) error {
				return s.AppendTx(ctx, tx2, []store.NewActivity{newActivity()})
			}))
			require.Equal(t, []int64{before, after1, after1 + 1}, ids(readN(t, s, 0, 3)))
			h, err := s.Head(ctx)
			require.NoError(t, err)
			require.Equal(t, after1+1, h)
			got, err := s.Domains(ctx, []string{"late.example"})
			require.NoError(t, err)
			require.Empty(t, got, "an open transaction's domain is registered")

			seen := h // a reader that has read everything so far
			if outcome == "commit" {
				require.NoError(t, tx.Commit(ctx))
				acts := readN(t, s, seen, 1) // the reader has not passed the late commit
				require.Equal(t, "held", acts[0].OrderingKey)
				require.Greater(t, acts[0].ID, seen)
				st, err := s.Domains(ctx, []string{"late.example"})
				require.NoError(t, err)
				require.Len(t, st, 1)
				require.Less(t, st[0].Cursor, acts[0].ID, "late.example starts past its activity")
			} else {
				require.NoError(t, tx.Rollback(ctx))
				require.Empty(t, readAll(t, s, seen))
				next := appendOne(t, s)
				require.Equal(t, seen+1, next)
			}
		})
	}
}

// TestConcurrentAppendsNeverSkip appends from many goroutines, own appends
// and transactional ones that commit or roll back after a varying pause,
// while readers page through the log by their last seen ID: every reader
// must see exactly the committed activities, each once, in strictly
// increasing ID order.
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
		committed []string // ordering keys, unique per activity
		total     int      // len(committed) once done is closed
	)
	done := make(chan struct{})
	var g errgroup.Group
	seen := make([][]string, readers)
	for r := range readers {
		g.Go(func() error {
			var after int64
			finished := false
			var deadline time.Time
			for {
				acts, err := s.Activities(ctx, after, 5)
				if err != nil {
					return err
				}
				for _, a := range acts {
					if a.ID <= after {
						return fmt.Errorf("reader %d: ID %d after %d", r, a.ID, after)
					}
					seen[r] = append(seen[r], a.OrderingKey)
					after = a.ID
				}
				if len(acts) > 0 {
					continue
				}
				// Once the writers are done, read until every committed
				// activity was seen (the last are numbered just after
				// their commits).
				if finished && len(seen[r]) >= total {
					return nil
				}
				if finished && time.Now().After(deadline) {
					return fmt.Errorf("reader %d: %d of %d activities seen", r, len(seen[r]), total)
				}
				select {
				case <-done:
					if !finished {
						finished, deadline = true, time.Now().Add(10*time.Second)
					}
				case <-time.After(time.Millisecond):
				}
			}
		})
	}
	var w errgroup.Group
	for i := range writers {
		w.Go(func() error {
			for round := range rounds {
				keyed := func(n int, domains ...string) store.NewActivity {
					a := newActivity(domains...)
					a.OrderingKey = fmt.Sprintf("w%d-r%d-%d", i, round, n)
					return a
				}
				batch := []store.NewActivity{keyed(0, fmt.Sprintf("d%d.example", round%5)), keyed(1)}
				keys := []string{batch[0].OrderingKey, batch[1].OrderingKey}
				if (i+round)%2 == 0 {
					if _, err := s.Append(ctx, batch); err != nil {
						return err
					}
					mu.Lock()
					committed = append(committed, keys...)
					mu.Unlock()
					continue
				}
				tx, err := db.Pool.Begin(ctx)
				if err != nil {
					return err
				}
				if err := s.AppendTx(ctx, tx, batch); err != nil {
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
				committed = append(committed, keys...)
				mu.Unlock()
			}
			return nil
		})
	}
	require.NoError(t, w.Wait())
	total = len(committed)
	close(done)
	require.NoError(t, g.Wait())

	slices.Sort(committed)
	for r := range readers {
		got := slices.Clone(seen[r])
		slices.Sort(got)
		require.Equal(t, committed, got, "reader %d skipped or repeated activities", r)
	}
}

// countingTracer counts the queries sent on the connections made from a
// pool's configuration, and the connections made.
type countingTracer struct{ queries, connects atomic.Int64 }

func (c *countingTracer) TraceConnectStart(ctx context.Context, _ pgx.TraceConnectStartData) context.Context {
	c.connects.Add(1)
	return ctx
}

func (c *countingTracer) TraceConnectEnd(context.Context, pgx.TraceConnectEndData) {}

func (c *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.queries.Add(1)
	return ctx
}

func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestAppendTxIsOneStatement counts, with a pgx tracer on the caller's
// pool, the statements the caller's transaction sees: exactly one per
// AppendTx, whatever the batch and in every query mode. The pool has one
// connection, held by the transaction, and no other connection is made from
// its configuration: the store opens none to enqueue.
func TestAppendTxIsOneStatement(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.New(t, &pgtest.Options{Mode: m.mode})
			cfg := db.Pool.Config()
			cfg.MaxConns = 1
			tracer := &countingTracer{}
			cfg.ConnConfig.Tracer = tracer
			pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
			require.NoError(t, err)
			defer pool.Close()
			s := storeOn(t, pool, db)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			_, err = s.Migrate(ctx)
			require.NoError(t, err)

			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			defer tx.Rollback(context.Background()) //nolint:errcheck // ends the test's transaction on failure
			start := tracer.queries.Load()
			for n := range 3 {
				batch := []store.NewActivity{newActivity("a.example")}
				for range n {
					batch = append(batch, newActivity("b.example", "c.example"))
				}
				require.NoError(t, s.AppendTx(ctx, tx, batch))
				require.Equal(t, int64(n+1), tracer.queries.Load()-start, "AppendTx number %d", n+1)
			}
			require.NoError(t, tx.Commit(ctx))
			require.Equal(t, int64(1), tracer.connects.Load(), "the store opened a connection of its own")
			readN(t, s, 0, 1+2+3)
		})
	}
}

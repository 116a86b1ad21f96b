package postgres

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// fakeLog is a runFunc that numbers batches from a counter, as the append
// statement does, and can be held, to let calls queue up behind it.
type fakeLog struct {
	mu         sync.Mutex
	last       int64
	statements atomic.Int64
	hold       chan struct{} // when not nil, each statement waits for a receive
	refuse     func(b *batch) bool
}

func (f *fakeLog) run(ctx context.Context, b *batch) (appendResult, error) {
	f.statements.Add(1)
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return appendResult{}, ctx.Err()
		}
	}
	if f.refuse != nil && f.refuse(b) {
		return appendResult{}, &pgconn.PgError{Code: "22021", Message: "invalid byte sequence"}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := f.last
	f.last += int64(b.n)
	return appendResult{prev: prev}, nil
}

func oneActivity(actor string) *batch {
	return &batch{n: 1, actors: []string{actor}, keys: []string{""}, bodies: [][]byte{{'x'}},
		inboxes: []string{"[]"}, doms: []string{"[]"}, audies: []string{"[]"}, all: []bool{false}}
}

// startCalls starts n appends of one activity each and returns their
// results once all are done.
func startCalls(ctx context.Context, g *groupCommit, f *fakeLog, actors []string) func() ([]appendResult, []error) {
	res := make([]appendResult, len(actors))
	errs := make([]error, len(actors))
	var wg sync.WaitGroup
	for i, a := range actors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = g.append(ctx, oneActivity(a), f.run)
		}()
	}
	return func() ([]appendResult, []error) { wg.Wait(); return res, errs }
}

// waiting reports how many calls wait for a statement.
func (g *groupCommit) waitingCalls() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.waiting)
}

// TestGroupCommitCombinesWaitingCalls holds the first statement while more
// calls arrive: they share the next statement, and each gets IDs of its
// own, every ID once.
func TestGroupCommitCombinesWaitingCalls(t *testing.T) {
	t.Parallel()
	var g groupCommit
	f := &fakeLog{hold: make(chan struct{})}
	ctx := t.Context()
	first := startCalls(ctx, &g, f, []string{"first"})
	require.Eventually(t, func() bool { return f.statements.Load() == 1 }, 5*time.Second, time.Millisecond)
	rest := startCalls(ctx, &g, f, []string{"a", "b", "c", "d", "e"})
	require.Eventually(t, func() bool { return g.waitingCalls() == 5 }, 5*time.Second, time.Millisecond)
	close(f.hold)
	res, errs := first()
	require.NoError(t, errs[0])
	require.Equal(t, int64(0), res[0].prev)
	res, errs = rest()
	seen := map[int64]bool{}
	for i := range res {
		require.NoError(t, errs[i])
		require.False(t, seen[res[i].prev], "ID %d given twice", res[i].prev+1)
		seen[res[i].prev] = true
	}
	require.Equal(t, int64(2), f.statements.Load(), "the waiting calls did not share a statement")
	require.Equal(t, int64(6), f.last)
}

// TestGroupCommitRetriesARefusedGroupAlone makes the server refuse any
// statement that carries a bad activity: the combined statement fails, and
// each call runs alone, so that only the bad one fails.
func TestGroupCommitRetriesARefusedGroupAlone(t *testing.T) {
	t.Parallel()
	var g groupCommit
	hold := make(chan struct{})
	f := &fakeLog{hold: hold, refuse: func(b *batch) bool {
		for _, a := range b.actors {
			if a == "bad" {
				return true
			}
		}
		return false
	}}
	ctx := t.Context()
	first := startCalls(ctx, &g, f, []string{"first"})
	require.Eventually(t, func() bool { return f.statements.Load() == 1 }, 5*time.Second, time.Millisecond)
	rest := startCalls(ctx, &g, f, []string{"good", "bad", "fine"})
	require.Eventually(t, func() bool { return g.waitingCalls() == 3 }, 5*time.Second, time.Millisecond)
	go func() {
		for range 5 { // first, the combined statement, then three alone
			select {
			case hold <- struct{}{}:
			case <-ctx.Done(): // fewer statements ran: the test failed
				return
			}
		}
	}()
	_, errs := first()
	require.NoError(t, errs[0])
	_, errs = rest()
	require.NoError(t, errs[0])
	var pgErr *pgconn.PgError
	require.True(t, errors.As(errs[1], &pgErr), "the bad call's error: %v", errs[1])
	require.NoError(t, errs[2])
	require.Equal(t, int64(3), f.last, "the good calls were appended, the bad one not")
}

// TestGroupCommitWithdrawsACancelledCall cancels a call that waits behind
// a running statement: it returns its context's error at once and is not
// appended.
func TestGroupCommitWithdrawsACancelledCall(t *testing.T) {
	t.Parallel()
	var g groupCommit
	f := &fakeLog{hold: make(chan struct{})}
	first := startCalls(t.Context(), &g, f, []string{"first"})
	require.Eventually(t, func() bool { return f.statements.Load() == 1 }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	waiting := startCalls(ctx, &g, f, []string{"cancelled"})
	require.Eventually(t, func() bool { return g.waitingCalls() == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	_, errs := waiting()
	require.ErrorIs(t, errs[0], context.Canceled)
	close(f.hold)
	_, errs = first()
	require.NoError(t, errs[0])
	require.Equal(t, int64(1), f.last, "the withdrawn call was appended")
	// The lead is free: a new call runs at once.
	_, errs = startCalls(t.Context(), &g, f, []string{"next"})()
	require.NoError(t, errs[0])
	require.Equal(t, int64(2), f.last)
}

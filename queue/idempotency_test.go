package queue

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/clock"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/memory"
)

// TestEnqueueIdempotencyKey enqueues one activity twice with one key, as
// a server retrying after a timeout would: the second enqueue returns the
// first ID and writes nothing, within Config.IdempotencyWindow; after it,
// the key makes a new activity.
func TestEnqueueIdempotencyKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := memory.NewWithClock(clk.Now)
	cfg := testConfig()
	cfg.IdempotencyWindow = time.Hour
	q, err := New(st, &sendertest.Fake{}, cfg)
	require.NoError(t, err)

	a := note(1, "https://a.example/inbox")
	a.IdempotencyKey = "https://local.example/activities/1"
	first, err := q.Enqueue(ctx, a)
	require.NoError(t, err)
	again, err := q.EnqueueMany(ctx, []Activity{a, note(2, "https://a.example/inbox")})
	require.NoError(t, err)
	require.Equal(t, first, again[0], "the retry returns the first ID")
	acts, err := st.Activities(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, acts, 2, "the retry wrote an activity")

	clk.Advance(59 * time.Minute)
	within, err := q.Enqueue(ctx, a)
	require.NoError(t, err)
	require.Equal(t, first, within)
	clk.Advance(time.Minute)
	after, err := q.Enqueue(ctx, a)
	require.NoError(t, err)
	require.Greater(t, after, again[1], "past Config.IdempotencyWindow the key makes a new activity")
}

func TestEnqueueRefusesLongIdempotencyKey(t *testing.T) {
	t.Parallel()
	st := newMemory()
	q, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	a := note(1, "https://a.example/inbox")
	a.IdempotencyKey = strings.Repeat("k", store.IdempotencyKeyMaxLen+1)
	_, err = q.EnqueueMany(context.Background(), []Activity{note(2, "https://a.example/inbox"), a})
	require.ErrorIs(t, err, ErrIdempotencyKeyTooLong)
	var ae *ActivityError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 1, ae.Index)
	h, err := st.Head(context.Background())
	require.NoError(t, err)
	require.Zero(t, h, "a refused batch wrote something")

	_, err = New(st, &sendertest.Fake{}, &Config{IdempotencyWindow: -time.Second})
	require.ErrorContains(t, err, "IdempotencyWindow must be positive")
}

package storetest

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// testListen checks that Listen either refuses at once or wakes the caller
// after an append, and ends with its context.
func testListen(t *testing.T, su suite) {
	su.run(t, "NotifiesOnAppend", func(t *testing.T, s store.Store) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var calls atomic.Int64
		result := make(chan error, 1)
		go func() { result <- s.Listen(ctx, func() { calls.Add(1) }) }()

		// The listener may need a moment to start listening, so append until
		// a notification arrives.
		unsupported := false
		require.Eventually(t, func() bool {
			select {
			case err := <-result:
				require.ErrorIs(t, err, store.ErrNotifyUnsupported)
				unsupported = true
				return true
			default:
			}
			appendOne(t, s, "a.example")
			return calls.Load() > 0
		}, waitFor, tick, "no notification after appends")
		if unsupported {
			t.Skip("store does not notify")
		}

		cancel()
		select {
		case err := <-result:
			require.ErrorIs(t, err, context.Canceled)
		case <-t.Context().Done():
		}
	})

	su.run(t, "EndedContext", func(t *testing.T, s store.Store) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := s.Listen(ctx, func() {})
		require.True(t, errors.Is(err, context.Canceled) || errors.Is(err, store.ErrNotifyUnsupported),
			"Listen with an ended context returned %v", err)
	})
}

package memory_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/memory"
	"github.com/apqueue/apqueue/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return memory.New() })
}

// A fake clock drives lease expiry, so queue tests need not wait out TTLs.
func TestNewWithClockExpiresLeases(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	var (
		mu  sync.Mutex
		now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	)
	s := memory.NewWithClock(func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	})
	require.NoError(t, s.RegisterDomains(ctx, []store.DomainRegistration{{Domain: "a.example"}}))
	a, err := s.AcquireLeases(ctx, "owner-a", time.Hour, 1)
	require.NoError(t, err)
	require.Len(t, a, 1)
	require.True(t, a[0].LeaseExpiresAt.Equal(now.Add(time.Hour)))

	b, err := s.AcquireLeases(ctx, "owner-b", time.Hour, 1)
	require.NoError(t, err)
	require.Empty(t, b)

	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	b, err = s.AcquireLeases(ctx, "owner-b", time.Hour, 1)
	require.NoError(t, err)
	require.Len(t, b, 1, "the lease did not expire on the fake clock")
	require.Greater(t, b[0].LeaseToken, a[0].LeaseToken)
}

// notify runs with no lock held, so it may call the store.
func TestListenNotifyMayCallTheStore(t *testing.T) {
	t.Parallel()
	s := memory.New()
	ctx, cancel := context.WithCancel(t.Context())
	heads := make(chan int64, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.Listen(ctx, func() {
			h, err := s.Head(ctx)
			if err == nil {
				select {
				case heads <- h:
				default:
				}
			}
		})
	}()
	require.Eventually(t, func() bool {
		_, err := s.Append(ctx, []store.NewActivity{{Body: []byte(`{}`)}})
		require.NoError(t, err)
		return len(heads) > 0
	}, 5*time.Second, 10*time.Millisecond)
	require.Positive(t, <-heads)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

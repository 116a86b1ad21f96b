package main

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
)

// The limited sender never has more than its limit of sends in the wrapped
// sender, counts the sends that had to wait, and gives up a wait when the
// context ends.
func TestLimitedSender(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var inside, most atomic.Int64
	entered := make(chan struct{}, 10)
	next := sender.SenderFunc(func(context.Context, *sender.Delivery) sender.Result {
		n := inside.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		entered <- struct{}{}
		<-release
		inside.Add(-1)
		return sender.Success(202)
	})
	l := newLimitedSender(next, 2)
	var wg sync.WaitGroup
	outcomes := make(chan sender.Outcome, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outcomes <- l.Send(context.Background(), &sender.Delivery{}).Outcome
		}()
	}
	<-entered
	<-entered
	require.Eventually(t, func() bool { return l.waits.Load() == 3 }, 5*time.Second, time.Millisecond, "the other three wait")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := l.Send(ctx, &sender.Delivery{})
	require.Equal(t, sender.Retry, res.Outcome, "a wait cut short is a retry")

	close(release)
	wg.Wait()
	close(outcomes)
	for o := range outcomes {
		require.Equal(t, sender.Delivered, o)
	}
	require.Equal(t, int64(2), most.Load())
}

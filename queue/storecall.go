package queue

import (
	"context"
	"time"
)

// storeCall returns the context for one background call to the store,
// bounded by timeout (Config.StoreTimeout) unless it is zero: a call on a
// connection that died without a word ends, and is retried as a failed
// one, instead of waiting until TCP gives up.
func storeCall(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, timeout)
}

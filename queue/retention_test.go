package queue

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRetentionPrunesAndFastForwardsDeadDomainsLoudly(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Domain == "gone.example" {
			return sender.Result{Outcome: sender.DomainGone, Status: 410, Reason: "410 Gone"}
		}
		return sender.Success(202)
	}}
	logs := &logBuffer{}
	cfg := testConfig()
	cfg.PruneInterval = 10 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	q := startQueue(t, st, fake, cfg)
	ctx := context.Background()
	require.NoError(t, q.SetSharedInbox(ctx, "https://gone.example/inbox"))
	var acts []Activity
	for i := range 10 {
		acts = append(acts, note(i, "https://live.example/inbox", "https://gone.example/inbox"))
	}
	ids := enqueueAll(t, q, acts...)
	eventually(t, func() bool {
		left, err := st.Activities(ctx, 0, 100)
		require.NoError(t, err)
		return len(left) == 0
	}, "delivered activities are pruned")
	eventually(t, func() bool {
		s := domainState(t, st, "gone.example")
		return s.Status == store.StatusDead && s.Cursor == ids[9]
	}, "the dead domain left behind is fast-forwarded, and stays so")
	require.Contains(t, logs.String(), "dead domain fast-forwarded")
	require.Contains(t, logs.String(), "domain=gone.example")
	require.True(t, strings.Contains(logs.String(), "skipped_ids="), "the skip is counted")
	require.Len(t, fake.Delivered("https://live.example/inbox"), 10)
}

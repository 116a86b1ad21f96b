package queue

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
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
	// The store moves the cursor before the queue logs the move.
	eventually(t, func() bool { return strings.Contains(logs.String(), "dead domain fast-forwarded") }, "the fast-forward is logged")
	require.Contains(t, logs.String(), "domain=gone.example")
	require.True(t, strings.Contains(logs.String(), "skipped_ids="), "the skip is counted")
	require.Len(t, fake.Delivered("https://live.example/inbox"), 10)
}

// TestRetentionPrunesDeadLetters records dead letters, old and recent,
// before the queue starts: its periodic retention job deletes those older
// than DeadLetterRetention and keeps the newest DeadLetterCap per domain.
func TestRetentionPrunesDeadLetters(t *testing.T) {
	t.Parallel()
	st := newMemory()
	ctx := context.Background()
	require.NoError(t, st.RegisterDomains(ctx, []store.DomainRegistration{{Domain: "a.example"}, {Domain: "b.example"}}))
	held, err := st.AcquireLeases(ctx, "setup", time.Minute, 2)
	require.NoError(t, err)
	now := time.Now()
	var dls []store.DeadLetter
	add := func(domain string, activityID int64, at time.Time) {
		dls = append(dls, store.DeadLetter{ActivityID: activityID, Domain: domain, Inbox: "https://" + domain + "/inbox",
			Body: []byte("{}"), Status: 422, Reason: "422", Attempts: 1, CreatedAt: at})
	}
	add("a.example", 1, now.Add(-40*24*time.Hour)) // past the default retention
	for id := int64(2); id <= 6; id++ {
		add("a.example", id, now)
	}
	add("b.example", 7, now)
	require.NoError(t, st.Checkpoint(ctx, held, dls))
	require.NoError(t, st.ReleaseLeases(ctx, "setup", []store.Lease{held[0].Lease(), held[1].Lease()}))

	logs := &logBuffer{}
	cfg := testConfig()
	cfg.PruneInterval = 10 * time.Millisecond
	cfg.DeadLetterCap = 3
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	startQueue(t, st, &sendertest.Fake{}, cfg)
	eventually(t, func() bool {
		left, err := st.DeadLetters(ctx, store.DeadLetterFilter{})
		require.NoError(t, err)
		var ids []int64
		for _, dl := range left {
			ids = append(ids, dl.ActivityID)
		}
		return slices.Equal(ids, []int64{4, 5, 6, 7})
	}, "dead letters past the retention or the cap are deleted, the rest kept")
	eventually(t, func() bool { return strings.Contains(logs.String(), "pruned dead letters") }, "the deletion is logged")
}

package queue

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

// goneSender answers 410 Gone for gone.example, which makes it dead at
// once, and accepts everything else.
func goneSender() *sendertest.Fake {
	return &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Domain == "gone.example" {
			return sender.Result{Outcome: sender.DomainGone, Status: 410, Reason: "410 Gone"}
		}
		return sender.Success(202)
	}}
}

func TestRetentionPrunesAndFastForwardsDeadDomainsLoudly(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := goneSender()
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

// hangingPrunes is a store whose Prune, while hang is set, never answers
// until its context ends, as on a connection that died without a reset;
// the others fail after the inner store's prune, as one whose last step
// (deleting the keys, say) failed.
type hangingPrunes struct {
	store.Store
	hang, fail atomic.Bool
	calls      atomic.Int32
}

func (s *hangingPrunes) Prune(ctx context.Context) (store.PruneResult, error) {
	s.calls.Add(1)
	if s.hang.Load() {
		<-ctx.Done()
		return store.PruneResult{}, ctx.Err()
	}
	res, err := s.Store.Prune(ctx)
	if err == nil && s.fail.Load() {
		err = errors.New("deleting expired keys: connection reset")
	}
	return res, err
}

func TestAPruneThatNeverAnswersEnds(t *testing.T) {
	t.Parallel()
	st := &hangingPrunes{Store: newMemory()}
	st.hang.Store(true)
	cfg := testConfig()
	cfg.PruneInterval = 20 * time.Millisecond
	cfg.StoreTimeout = 50 * time.Millisecond
	startQueue(t, st, &sendertest.Fake{}, cfg)
	eventually(t, func() bool { return st.calls.Load() >= 3 }, "prunes after one that never answered")
}

func TestAFastForwardStandsWhenTheRestOfThePruneFails(t *testing.T) {
	t.Parallel()
	st := &hangingPrunes{Store: newMemory()}
	st.fail.Store(true)
	fake := goneSender()
	logs := &logBuffer{}
	cfg := testConfig()
	cfg.PruneInterval = 10 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	q := startQueue(t, st, fake, cfg)
	enqueueAll(t, q, note(0, "https://gone.example/inbox"))
	eventually(t, func() bool { return domainState(t, st, "gone.example").Status == store.StatusDead }, "the domain is dead")
	ids := enqueueAll(t, q, note(1, "https://live.example/inbox", "https://gone.example/inbox"))
	eventually(t, func() bool { return strings.Contains(logs.String(), "dead domain fast-forwarded") }, "the fast-forward is logged")
	eventually(t, func() bool {
		q.mu.Lock()
		w := q.workers["gone.example"]
		q.mu.Unlock()
		return w != nil && w.snapshot().Cursor == ids[0]
	}, "the dead domain's worker moved on")
	require.Contains(t, logs.String(), "pruning the activity log failed")
}

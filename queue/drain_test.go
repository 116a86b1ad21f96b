package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
)

// Drain returns only once a backlog held back by the sender is settled on
// every domain, delivered or dead-lettered.
func TestDrainWaitsForABacklog(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var mu sync.Mutex
	settled := map[string]int{}
	snd := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		select {
		case <-release:
		case <-ctx.Done():
			return sender.Result{Outcome: sender.Retry, Reason: ctx.Err().Error()}
		}
		mu.Lock()
		settled[d.Domain]++
		mu.Unlock()
		if strings.HasPrefix(d.Domain, "refusing") {
			return sender.Result{Outcome: sender.Permanent, Status: 400, Reason: "400 Bad Request"}
		}
		return sender.Success(202)
	}}
	st := newMemory()
	q := startQueue(t, st, snd, testConfig())
	const perDomain = 40
	domains := []string{"a.example", "b.example", "c.example", "refusing.example"}
	var acts []Activity
	for i := range perDomain {
		for _, dom := range domains {
			acts = append(acts, note(len(acts), "https://"+dom+"/inbox"))
		}
		_ = i
	}
	enqueueAll(t, q, acts...)

	drained := make(chan error, 1)
	go func() { drained <- q.Drain(t.Context()) }()
	eventually(t, func() bool { return q.quiet.watchers.Load() == 1 }, "Drain waits")
	close(release)
	select {
	case err := <-drained:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Drain did not return")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, dom := range domains {
		require.Equal(t, perDomain, settled[dom], "%s: Drain returned before everything settled", dom)
	}
	dls, err := st.DeadLetters(t.Context(), storeFilter("refusing.example"))
	require.NoError(t, err)
	require.Len(t, dls, perDomain)
}

// A domain whose last activity was dead-lettered is idle once the dead
// letter is offered, without waiting for another activity to wake it:
// Drain returns.
func TestDrainEndsAfterADeadLetter(t *testing.T) {
	t.Parallel()
	st := newMemory()
	q := startQueue(t, st, refusingDomainSender("a.example"), testConfig())
	enqueueAll(t, q, note(1, "https://a.example/inbox"))
	eventually(t, func() bool { return deadLetterCount(t, st, "a.example") == 1 }, "the dead letter")
	enqueueAll(t, q, note(2, "https://b.example/inbox"))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.NoError(t, q.Drain(ctx))
}

// Drain waits for a paused domain, which settles once resumed: until then
// it returns ctx's error naming the domain.
func TestDrainWaitsForAPausedDomainUntilCtxEnds(t *testing.T) {
	t.Parallel()
	snd := &sendertest.Fake{}
	q := startQueue(t, newMemory(), snd, testConfig())
	require.NoError(t, q.AddDomains(t.Context(), "paused.example"))
	require.NoError(t, q.Pause(t.Context(), "paused.example"))
	ids := enqueueAll(t, q, note(1, "https://paused.example/inbox"), note(2, "https://other.example/inbox"))
	// other.example settles first, however slow the machine: what Drain
	// names after 300 ms is what waits on the pause alone.
	eventually(t, func() bool {
		st, err := q.Stats(t.Context())
		require.NoError(t, err)
		for _, d := range st.Domains {
			if d.Domain == "other.example" {
				return d.Cursor == ids[1]
			}
		}
		return false
	}, "other.example delivers")

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	err := q.Drain(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "paused.example (paused)")
	require.NotContains(t, err.Error(), "other.example")

	require.NoError(t, q.Resume(t.Context(), "paused.example"))
	require.NoError(t, q.Drain(t.Context()))
	require.Len(t, snd.Calls(), 2)
}

// Drain works from a process that does not deliver: it reads the store
// until the process that delivers has saved every domain's cursor.
func TestDrainFromAnotherProcess(t *testing.T) {
	t.Parallel()
	st := newMemory()
	delivered := make(chan struct{})
	var once sync.Once
	snd := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		<-delivered
		return sender.Success(202)
	}}
	// The memory store does not notify: the delivering process polls.
	dcfg := testConfig()
	dcfg.PollInterval = 10 * time.Millisecond
	startQueue(t, st, snd, dcfg)
	cfg := testConfig()
	enqueuer, err := New(st, sender.SenderFunc(func(context.Context, *sender.Delivery) sender.Result {
		panic("the enqueuing process never delivers")
	}), cfg)
	require.NoError(t, err)
	var acts []Activity
	for i := range 30 {
		acts = append(acts, note(i, fmt.Sprintf("https://d%d.example/inbox", i%3)))
	}
	ids, err := enqueuer.EnqueueMany(t.Context(), acts)
	require.NoError(t, err)

	drained := make(chan error, 1)
	dctx, dcancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer dcancel()
	go func() { drained <- enqueuer.Drain(dctx) }()
	eventually(t, func() bool { return enqueuer.quiet.watchers.Load() == 1 }, "Drain waits")
	once.Do(func() { close(delivered) })
	require.NoError(t, <-drained)
	require.Len(t, snd.Calls(), 30)
	for i := range 3 {
		require.GreaterOrEqual(t, domainState(t, st, fmt.Sprintf("d%d.example", i)).Cursor, ids[len(ids)-1])
	}
}

// Drain with nothing enqueued returns at once.
func TestDrainEmpty(t *testing.T) {
	t.Parallel()
	q, err := New(newMemory(), &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	require.NoError(t, q.Drain(t.Context()))
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	require.True(t, errors.Is(q.Drain(canceled), context.Canceled))
}

// Drain does not wait for a domain suspended with deliveries pending:
// nothing is delivered there (Suspend drops its backlog, and Drain skips
// the status).
func TestDrainSkipsASuspendedDomain(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	defer close(hold)
	snd := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Domain == "blocked.example" {
			select {
			case <-hold:
			case <-ctx.Done():
			}
			return sender.Result{Outcome: sender.Retry, Reason: "held"}
		}
		return sender.Success(202)
	}}
	q := startQueue(t, newMemory(), snd, testConfig())
	enqueueAll(t, q, note(1, "https://blocked.example/inbox"), note(2, "https://ok.example/inbox"))
	eventually(t, func() bool { return q.workerCount() == 2 }, "both domains are worked")
	_, err := q.Suspend(t.Context(), "blocked.example")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.NoError(t, q.Drain(ctx))
}

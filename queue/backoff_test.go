package queue

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/backoff"
	"github.com/apqueue/apqueue/internal/clock"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// waitTimer waits until the worker has handled attempt n and armed its timer,
// and returns how far in the future the timer fires.
func waitTimer(t *testing.T, fake *sendertest.Fake, clk *clock.Fake, n int) time.Duration {
	t.Helper()
	var in time.Duration
	eventually(t, func() bool {
		if len(fake.Calls()) < n {
			return false
		}
		at, ok := clk.NextDeadline()
		if !ok || !at.After(clk.Now()) {
			return false
		}
		in = at.Sub(clk.Now())
		return true
	}, "attempt %d handled and timer armed", n)
	return in
}

func TestBackoffDoublesAndHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(epoch)
	var attempts atomic.Int32
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		switch attempts.Add(1) {
		case 1, 2:
			return sender.Result{Outcome: sender.Retry, Status: 503, DomainLevel: true, Reason: "503 Service Unavailable"}
		case 3:
			return sender.Result{Outcome: sender.Retry, Status: 429, DomainLevel: true, RetryAfter: 20 * time.Second, Reason: "429 Too Many Requests"}
		case 4:
			return sender.Result{Outcome: sender.Retry, Status: 429, DomainLevel: true, RetryAfter: 5 * time.Hour, Reason: "429 Too Many Requests"}
		}
		return sender.Success(202)
	}}
	cfg := testConfig()
	cfg.BackoffMin = time.Second
	cfg.BackoffMax = time.Minute
	cfg.clock = clk
	q := startQueue(t, newMemory(), fake, cfg)
	enqueueAll(t, q, note(1, "https://a.example/inbox"))

	require.Equal(t, time.Second, waitTimer(t, fake, clk, 1), "first failure waits BackoffMin")
	clk.Advance(time.Second)
	require.Equal(t, 2*time.Second, waitTimer(t, fake, clk, 2), "second failure doubles")
	clk.Advance(2 * time.Second)
	require.Equal(t, 20*time.Second, waitTimer(t, fake, clk, 3), "Retry-After longer than the backoff is honoured")
	clk.Advance(20 * time.Second)
	require.Equal(t, time.Minute, waitTimer(t, fake, clk, 4), "Retry-After is capped at BackoffMax")
	clk.Advance(time.Minute)
	eventually(t, func() bool { return len(fake.Delivered("https://a.example/inbox")) == 1 }, "delivered after the backoff")
	calls := fake.Calls()
	require.Len(t, calls, 5, "no attempt before its backoff ended")
}

func TestFailingDomainDropsToOneRequestInFlight(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	failing.Store(true)
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		time.Sleep(time.Millisecond) // simulated latency, so overlap would show
		if failing.Load() {
			return sender.Result{Outcome: sender.Retry, Status: 502, DomainLevel: true, Reason: "502 Bad Gateway"}
		}
		return sender.Success(202)
	}}
	// The observer gets the worker's events in the order the worker
	// pushed them (from its own goroutine, later): counted in that order,
	// they give the queue's own count of requests in flight at each
	// dispatch. Stop delivers the last of them before the verdict.
	var mu sync.Mutex
	inflight, failures, maxWhileFailing, maxHealthy := 0, 0, 0, 0
	cfg := testConfig()
	cfg.MaxInFlightPerDomain = 8
	cfg.BackoffMin = time.Millisecond
	cfg.BackoffMax = 2 * time.Millisecond
	cfg.Observer = ObserverFunc(func(_ context.Context, e Event) {
		mu.Lock()
		defer mu.Unlock()
		switch e.Kind {
		case EventDispatched:
			inflight++
			if failures > 0 {
				maxWhileFailing = max(maxWhileFailing, inflight)
			} else {
				maxHealthy = max(maxHealthy, inflight)
			}
		case EventRetry:
			inflight--
			failures++
		case EventDelivered:
			inflight--
			failures = 0
		}
	})
	q := startQueue(t, newMemory(), fake, cfg)
	var acts []Activity
	for i := range 30 {
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	eventually(t, func() bool { return len(fake.Calls()) >= 20 }, "several failed attempts")
	failing.Store(false)
	eventually(t, func() bool { return len(fake.Delivered("https://a.example/inbox")) == 30 }, "all delivered after recovery")
	require.NoError(t, q.Stop(context.Background()), "stop, so that the Observer has seen every event")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, maxWhileFailing, "one request at a time while failing, once the requests sent before the first failure are back")
	require.Greater(t, maxHealthy, 1, "in parallel while healthy")
}

func TestDeadLetterAfterBoundedAttemptsOnHealthyDomain(t *testing.T) {
	t.Parallel()
	st := newMemory()
	var poison atomic.Int64
	// The test orders results as the worker handles them (the Observer is
	// called from the worker after it took each result in), so the verdict
	// does not depend on which goroutine runs first.
	firstFailure, laterAccepted := make(chan struct{}), make(chan struct{})
	var delivered atomic.Int32
	observer := ObserverFunc(func(_ context.Context, e Event) {
		switch {
		case e.Kind == EventRetry && e.ActivityID == poison.Load() && e.Attempt == 1:
			close(firstFailure)
		case e.Kind == EventDelivered && delivered.Add(1) == 8:
			close(laterAccepted)
		}
	})
	wait := func(ctx context.Context, c chan struct{}) {
		select {
		case <-c:
		case <-ctx.Done():
		}
	}
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		switch id := d.Activity.ID; {
		case id == poison.Load():
			if d.Attempt >= 2 {
				wait(ctx, laterAccepted) // the domain accepted the others meanwhile
			}
			return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
		case id == poison.Load()+1:
			return sender.Result{Outcome: sender.Permanent, Status: 400, Reason: "400 Bad Request"}
		case id > poison.Load()+1:
			wait(ctx, firstFailure) // accepted after the poison's first failure
		}
		return sender.Success(202)
	}}
	cfg := testConfig()
	cfg.MaxAttempts = 3
	cfg.BackoffMin = time.Millisecond
	cfg.BackoffMax = 5 * time.Millisecond
	cfg.Observer = observer
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	var acts []Activity
	for i := range 10 {
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	ids, err := q.EnqueueMany(context.Background(), acts)
	require.NoError(t, err)
	poison.Store(ids[2])
	require.NoError(t, q.Start(context.Background()))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })

	eventually(t, func() bool { return domainState(t, st, "a.example").Cursor == ids[9] }, "the cursor passes the failing activities")
	dls, err := st.DeadLetters(context.Background(), store.DeadLetterFilter{Domain: "a.example"})
	require.NoError(t, err)
	require.Len(t, dls, 2)
	slices.SortFunc(dls, func(a, b store.DeadLetter) int { return cmp.Compare(a.ActivityID, b.ActivityID) })
	require.Equal(t, ids[2], dls[0].ActivityID)
	require.Equal(t, 3, dls[0].Attempts, "gave up after MaxAttempts")
	require.Equal(t, 500, dls[0].Status)
	require.Contains(t, dls[0].Reason, "500 Internal Server Error")
	require.Equal(t, "https://a.example/inbox", dls[0].Inbox)
	require.JSONEq(t, string(acts[2].Body), string(dls[0].Body), "the dead letter keeps the activity")
	require.Equal(t, ids[3], dls[1].ActivityID)
	require.Equal(t, 1, dls[1].Attempts, "a permanent refusal is not retried")
	require.Equal(t, 400, dls[1].Status)
	require.Len(t, fake.Delivered("https://a.example/inbox"), 8)
}

func TestDomainFailingTooLongIsMarkedDeadThenRevived(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(epoch)
	st := newMemory()
	var alive atomic.Bool
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if alive.Load() {
			return sender.Success(202)
		}
		return sender.Result{Outcome: sender.Retry, DomainLevel: true, Reason: "connection refused"}
	}}
	var statusMu sync.Mutex
	var statuses []store.DomainStatus
	cfg := testConfig()
	cfg.clock = clk
	cfg.BackoffMin = time.Minute
	cfg.BackoffMax = 10 * time.Minute
	cfg.DeadAfter = time.Hour
	cfg.ProbeInterval = 6 * time.Hour
	cfg.Observer = ObserverFunc(func(_ context.Context, e Event) {
		if e.Kind == EventDomainStatus {
			statusMu.Lock()
			statuses = append(statuses, e.Status)
			statusMu.Unlock()
		}
	})
	q := startQueue(t, st, fake, cfg)
	ids := enqueueAll(t, q, note(1, "https://a.example/inbox"), note(2, "https://a.example/inbox"))

	// Fail until an hour has passed.
	n := 1
	for clk.Now().Sub(epoch) < time.Hour {
		clk.Advance(waitTimer(t, fake, clk, n))
		n++
	}
	in := waitTimer(t, fake, clk, n)
	require.Equal(t, 6*time.Hour, in, "a dead domain is only probed every ProbeInterval")
	w := q.workerList()[0]
	require.Equal(t, store.StatusDead, w.snapshot().Status)

	// A failed probe keeps it dead; a successful one revives it.
	clk.Advance(in)
	n++
	require.Equal(t, 6*time.Hour, waitTimer(t, fake, clk, n))
	alive.Store(true)
	clk.Advance(6 * time.Hour)
	eventually(t, func() bool { return len(fake.Delivered("https://a.example/inbox")) == 2 }, "revived and caught up")
	eventually(t, func() bool {
		s := domainState(t, st, "a.example")
		return s.Status == store.StatusActive && s.Cursor == ids[1] && s.FailCount == 0 && s.LastError == ""
	}, "the revived state is saved")
	require.NoError(t, q.Stop(context.Background()), "stop, so that the Observer has seen every event")
	statusMu.Lock()
	require.Equal(t, []store.DomainStatus{store.StatusDead, store.StatusActive}, statuses)
	statusMu.Unlock()
}

func TestGoneSharedInboxMarksDomainDead(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.SharedInbox {
			return sender.Result{Outcome: sender.DomainGone, Status: 410, Reason: "410 Gone"}
		}
		return sender.Success(202)
	}}
	q := startQueue(t, st, fake, testConfig())
	require.NoError(t, q.SetSharedInbox(context.Background(), "https://gone.example/inbox"))
	enqueueAll(t, q, note(1, "https://gone.example/users/bob/inbox"))
	eventually(t, func() bool { return domainState(t, st, "gone.example").Status == store.StatusDead }, "marked dead")
	s := domainState(t, st, "gone.example")
	require.Contains(t, s.LastError, "410 Gone")
	require.Zero(t, s.Cursor, "nothing is skipped: the backlog stays until an admin or the retention says so")
	calls := fake.Calls()
	require.Len(t, calls, 1)
	require.Equal(t, "https://gone.example/inbox", calls[0].Inbox, "the shared inbox is preferred")
}

func TestRetryAfterSetsTheWaitInsteadOfCompounding(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(epoch)
	var attempts atomic.Int32
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if attempts.Add(1) <= 6 {
			return sender.Result{Outcome: sender.Retry, Status: 429, DomainLevel: true, RetryAfter: 3 * time.Second, Reason: "429 Too Many Requests"}
		}
		return sender.Success(202)
	}}
	cfg := testConfig()
	cfg.BackoffMin = time.Second
	cfg.BackoffMax = time.Hour
	cfg.clock = clk
	q := startQueue(t, newMemory(), fake, cfg)
	enqueueAll(t, q, note(1, "https://a.example/inbox"))
	for n := 1; n <= 6; n++ {
		// The exponential backoff would be 1 s, 2 s, 4 s, ... 32 s by now.
		require.Equal(t, 3*time.Second, waitTimer(t, fake, clk, n), "429 number %d waits what Retry-After says", n)
		clk.Advance(3 * time.Second)
	}
	eventually(t, func() bool { return len(fake.Delivered("https://a.example/inbox")) == 1 }, "delivered")
}

func TestRetryAfterIsNeverShortenedByJitter(t *testing.T) {
	t.Parallel()
	p := backoff.Policy{Min: time.Second, Max: time.Minute, Jitter: 0.2}
	for range 1000 {
		d := p.After(3 * time.Second)
		require.GreaterOrEqual(t, d, 3*time.Second)
		require.LessOrEqual(t, d, 3600*time.Millisecond)
	}
	require.Equal(t, time.Minute, p.After(5*time.Hour), "capped at Max")
	require.Zero(t, p.After(-time.Second), "never negative")
}

func TestFailuresOfSingleDeliveriesDoNotThrottleTheDomain(t *testing.T) {
	t.Parallel()
	// Every third activity fails once with a 500; the rest succeed. The
	// domain keeps its requests in flight: the failed ones wait alone.
	var mu sync.Mutex
	inflight, maxAfterFailure, failures := 0, 0, 0
	cfg := testConfig()
	cfg.MaxInFlightPerDomain = 4
	cfg.BackoffMin, cfg.BackoffMax = time.Millisecond, 2*time.Millisecond
	release := make(chan struct{})
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Activity.ID%3 == 0 && d.Attempt == 1 {
			return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
		}
		select { // hold successes until four requests are in flight after a failure
		case <-release:
		case <-ctx.Done():
		}
		return sender.Success(202)
	}}
	var once sync.Once
	cfg.Observer = ObserverFunc(func(_ context.Context, e Event) {
		mu.Lock()
		defer mu.Unlock()
		switch e.Kind {
		case EventDispatched:
			inflight++
			if failures > 0 {
				maxAfterFailure = max(maxAfterFailure, inflight)
				if maxAfterFailure == cfg.MaxInFlightPerDomain {
					once.Do(func() { close(release) })
				}
			}
		case EventRetry:
			inflight--
			failures++
		case EventDelivered:
			inflight--
		}
	})
	q := startQueue(t, newMemory(), fake, cfg)
	var acts []Activity
	for i := range 30 {
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	eventually(t, func() bool { return len(fake.Delivered("https://a.example/inbox")) == 30 }, "all delivered")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, cfg.MaxInFlightPerDomain, maxAfterFailure, "a failure of one delivery kept the domain from sending in parallel")
}

// steppingClock is a fake clock that moves on at every reading, as the real
// one does while the worker runs a step: a time the step found not yet come
// may have passed by the time the worker arms its timer.
type steppingClock struct {
	*clock.Fake
	step time.Duration
}

func (c *steppingClock) Now() time.Time {
	now := c.Fake.Now()
	c.Advance(c.step)
	return now
}

func TestRetryDueWhileTheWorkerStepsIsNotLost(t *testing.T) {
	t.Parallel()
	// Whatever the backoff, in whichever of the step's clock readings it
	// ends, the worker wakes for the retry.
	for backoff := time.Millisecond; backoff <= 12*time.Millisecond; backoff += time.Millisecond {
		t.Run(backoff.String(), func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
				if calls.Add(1) <= 5 {
					return sender.Result{Outcome: sender.Retry, Status: 502, DomainLevel: true, Reason: "502 Bad Gateway"}
				}
				return sender.Success(202)
			}}
			cfg := testConfig()
			cfg.BackoffMin, cfg.BackoffMax = backoff, backoff
			clk := &steppingClock{Fake: clock.NewFake(epoch), step: time.Millisecond}
			cfg.clock = clk
			q := startQueue(t, newMemory(), fake, cfg)
			enqueueAll(t, q, note(1, "https://a.example/inbox"), note(2, "https://a.example/inbox"))
			eventually(t, func() bool {
				clk.Advance(time.Millisecond) // time goes on while the worker sleeps too
				return len(fake.Delivered("https://a.example/inbox")) == 2
			}, "delivered after five failures")
		})
	}
}

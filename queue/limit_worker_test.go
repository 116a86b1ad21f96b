package queue

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/clock"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
)

// gatedSender holds every request until a token is released for it, and
// counts the requests in flight per domain and in all.
type gatedSender struct {
	fake  *sendertest.Fake
	total atomic.Int64
	most  atomic.Int64 // the most in flight in all at once

	mu    sync.Mutex
	gates map[string]chan struct{}
	cur   map[string]int
}

func newGatedSender(answer func(d *sender.Delivery, inflight int) (sender.Result, bool)) *gatedSender {
	g := &gatedSender{gates: map[string]chan struct{}{}, cur: map[string]int{}}
	g.fake = &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		gate := g.gate(d.Domain)
		g.mu.Lock()
		g.cur[d.Domain]++
		n := g.cur[d.Domain]
		g.mu.Unlock()
		defer func() {
			g.mu.Lock()
			g.cur[d.Domain]--
			g.mu.Unlock()
		}()
		if answer != nil {
			if res, now := answer(d, n); now {
				return res
			}
		}
		t := g.total.Add(1)
		defer g.total.Add(-1)
		for {
			m := g.most.Load()
			if t <= m || g.most.CompareAndSwap(m, t) {
				break
			}
		}
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return sender.Success(202)
	}}
	return g
}

func (g *gatedSender) gate(dom string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.gates[dom]
	if !ok {
		c = make(chan struct{})
		g.gates[dom] = c
	}
	return c
}

// inflight returns how many requests to dom wait at the gate or are being
// answered.
func (g *gatedSender) inflight(dom string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cur[dom]
}

// release lets n requests to dom through, failing the test if they do not
// come within a few seconds.
func (g *gatedSender) release(t *testing.T, dom string, n int) {
	t.Helper()
	gate := g.gate(dom)
	deadline := time.After(5 * time.Second)
	for range n {
		select {
		case gate <- struct{}{}:
		case <-deadline:
			t.Fatalf("no request to %s to release", dom)
		}
	}
}

// open lets every request to dom through from now on.
func (g *gatedSender) open(dom string) { close(g.gate(dom)) }

func TestAdaptiveLimitGrowsWithTheLoad(t *testing.T) {
	t.Parallel()
	const dom = "far.example"
	g := newGatedSender(nil)
	cfg := testConfig()
	// The latency the limit judges is on the queue's clock: on a fake one
	// that stands still, the time the test takes to release requests does
	// not make them slow answers.
	cfg.clock = clock.NewFake(time.Now())
	q := startQueue(t, newMemory(), g.fake, cfg)
	var acts []Activity
	for i := range 300 {
		acts = append(acts, note(i, "https://far.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	eventually(t, func() bool { return q.workerCount() == 1 }, "worker started")
	w := q.workerList()[0]
	require.Equal(t, MaxInFlightPerDomainDefault, w.snapshot().InFlightMax)
	// Each round, the domain answers every request in flight at once: a
	// window without congestion, so the limit grows.
	limits := releaseRounds(t, g, w, dom, 4)
	require.Equal(t, InitialInFlightLimit, limits[0], "the limit starts at %d", InitialInFlightLimit)
	for i := 1; i < len(limits); i++ {
		require.Greater(t, limits[i], limits[i-1], "the limit grows while the domain keeps up: %v", limits)
	}
	require.Greater(t, g.fake.MaxInFlight(dom), 2*InitialInFlightLimit, "more in flight than a fixed default would allow")
	s := w.snapshot()
	require.NotEmpty(t, s.LimitChanges)
	require.Equal(t, "grow", s.LimitChanges[len(s.LimitChanges)-1].Reason)
	g.open(dom)
	eventuallyCount(t, g.fake.DeliveredCount, 300, "all delivered")
}

func TestTooManyRequestsShrinkTheLimitWithoutBackingOff(t *testing.T) {
	t.Parallel()
	for _, fixed := range []bool{false, true} {
		t.Run(fmt.Sprintf("fixed=%v", fixed), func(t *testing.T) {
			t.Parallel()
			const dom, capacity = "small.example", 2
			// The domain works 2 requests at once and answers 503 beyond.
			g := newGatedSender(func(d *sender.Delivery, inflight int) (sender.Result, bool) {
				if inflight > capacity {
					return sender.Result{Outcome: sender.Retry, Status: 503, DomainLevel: true, Reason: "503 Service Unavailable"}, true
				}
				return sender.Result{}, false
			})
			cfg := testConfig()
			cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour // a domain backoff would stall the test
			cfg.FixedInFlight = fixed
			cfg.clock = clock.NewFake(time.Now())
			cfg.MaxInFlightPerDomain = 4
			q := startQueue(t, newMemory(), g.fake, cfg)
			var acts []Activity
			for i := range 40 {
				acts = append(acts, keyed(i, fmt.Sprint("object-", i%5), "https://small.example/inbox"))
			}
			enqueueAll(t, q, acts...)
			eventually(t, func() bool { return q.workerCount() == 1 }, "worker started")
			w := q.workerList()[0]
			eventually(t, func() bool { return w.snapshot().Retried > 0 && g.inflight(dom) == capacity }, "refused beyond the capacity")
			if fixed {
				// As before the limit adapted: the 503 backs the whole domain off.
				eventually(t, func() bool { return !w.snapshot().NextAttemptAt.IsZero() }, "the domain backs off")
				return
			}
			g.release(t, dom, 40) // one answer each: none refused goes through the gate
			eventually(t, func() bool { return g.fake.DeliveredCount() == 40 }, "all delivered")
			s := w.snapshot()
			require.True(t, s.NextAttemptAt.IsZero(), "the domain never backed off as a whole")
			require.LessOrEqual(t, s.InFlightLimit, capacity+1)
			require.Equal(t, "congestion: 503", s.LimitChanges[0].Reason, "%+v", s.LimitChanges)
			// Same key, never overtaken: each object's activities arrive
			// in ID order, retries included.
			last := map[int64]int64{}
			for _, id := range g.fake.Delivered("https://small.example/inbox") {
				key := (id - 1) % 5
				require.Greater(t, id, last[key], "activity %d delivered after a later one with its key", id)
				last[key] = id
			}
		})
	}
}

func TestTheGlobalCapIsOnByDefault(t *testing.T) {
	t.Parallel()
	big := func(string) int { return 1000 }
	for _, tc := range []struct {
		name   string
		cap    int
		want   int // Stats.MaxInFlight
		bigMax int // a domain's limit when DomainLimitFunc asks for 1,000
	}{
		{"default", 0, MaxInFlightDefault, MaxInFlightDefault},
		{"set", 10, 10, 10},
		{"none", -1, 0, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig()
			cfg.MaxInFlight = tc.cap
			cfg.DomainLimitFunc = big
			q, err := New(newMemory(), &sendertest.Fake{}, cfg)
			require.NoError(t, err)
			st, err := q.Stats(context.Background())
			require.NoError(t, err)
			require.Equal(t, tc.want, st.MaxInFlight)
			require.Equal(t, tc.want > 0, q.slots != nil, "a cap is kept only when there is one")
			require.Equal(t, tc.bigMax, q.domainLimit("big.example"))
		})
	}
}

func TestGlobalCapServesEveryDomainInTurn(t *testing.T) {
	t.Parallel()
	g := newGatedSender(nil)
	for _, dom := range []string{"s1.example", "s2.example", "s3.example"} {
		g.open(dom) // the small domains answer at once
	}
	cfg := testConfig()
	cfg.MaxInFlight = 2
	cfg.clock = clock.NewFake(time.Now()) // no answer is judged slow
	q := startQueue(t, newMemory(), g.fake, cfg)
	var acts []Activity
	for i := range 60 {
		acts = append(acts, note(i, "https://big.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	eventually(t, func() bool { return g.inflight("big.example") == 2 }, "the big domain takes the whole cap")
	enqueueAll(t, q, note(100, "https://s1.example/inbox", "https://s2.example/inbox", "https://s3.example/inbox"))
	eventually(t, func() bool {
		q.slots.mu.Lock()
		defer q.slots.mu.Unlock()
		return len(q.slots.waiting) == 3
	}, "the three small domains wait for a slot")
	for _, w := range q.workerList() {
		require.Equal(t, 2, w.snapshot().InFlightMax, "no domain's limit above the cap")
	}
	// The slot the big domain frees goes to the domains waiting, in turn:
	// the small ones are served after one of its answers, not after its
	// backlog.
	g.release(t, "big.example", 1)
	eventually(t, func() bool { return g.fake.DeliveredCount() >= 4 }, "the small domains served")
	for _, inbox := range []string{"https://s1.example/inbox", "https://s2.example/inbox", "https://s3.example/inbox"} {
		require.Len(t, g.fake.Delivered(inbox), 1, inbox)
	}
	require.Len(t, g.fake.Delivered("https://big.example/inbox"), 1, "the big domain did not run ahead of them")
	g.open("big.example")
	eventually(t, func() bool { return g.fake.DeliveredCount() == 63 }, "all delivered")
	require.LessOrEqual(t, g.most.Load(), int64(2), "never more in flight than the cap")
	eventually(t, func() bool { return q.slots.inUse() == 0 }, "every slot given back")
}

func TestADomainWaitingForTheGlobalCapReadsLittleAhead(t *testing.T) {
	t.Parallel()
	g := newGatedSender(nil)
	cfg := testConfig()
	cfg.MaxInFlight = 2
	cfg.clock = clock.NewFake(time.Now()) // no answer is judged slow
	q := startQueue(t, newMemory(), g.fake, cfg)
	enqueueAll(t, q, note(0, "https://big.example/inbox"), note(-1, "https://big.example/inbox"))
	eventually(t, func() bool { return g.inflight("big.example") == 2 }, "the big domain takes the whole cap")

	var acts []Activity
	for i := range 40 {
		acts = append(acts, note(i+1, "https://waiting.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	queued := func() bool {
		q.slots.mu.Lock()
		defer q.slots.mu.Unlock()
		return len(q.slots.waiting) == 1
	}
	eventually(t, queued, "the other domain waits for a slot")
	// One ready to go is enough for a turn of the cap: the rest stays in
	// the log, not in memory, however long the wait (a domain that may
	// send reads up to 2 × InitialInFlightLimit ahead).
	require.LessOrEqual(t, pendingOf(t, q, "waiting.example"), 2)

	g.open("big.example")
	g.open("waiting.example")
	eventually(t, func() bool { return g.fake.DeliveredCount() == 42 }, "all delivered")
}

func TestADomainWhoseDeliveriesWaitForARetryReadsOnUnderTheGlobalCap(t *testing.T) {
	t.Parallel()
	failed := atomic.Bool{}
	g := newGatedSender(func(d *sender.Delivery, _ int) (sender.Result, bool) {
		if d.Domain == "waiting.example" && failed.CompareAndSwap(false, true) {
			return sender.Result{Outcome: sender.Retry, Status: 503, Reason: "503 Service Unavailable"}, true
		}
		return sender.Result{}, false
	})
	g.open("waiting.example")
	cfg := testConfig()
	cfg.MaxInFlight = 1
	cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour
	cfg.clock = clock.NewFake(time.Now()) // no answer is judged slow
	q := startQueue(t, newMemory(), g.fake, cfg)
	// The first fails and waits an hour for its retry; the second has its
	// key, so it waits too.
	enqueueAll(t, q, keyed(1, "K", "https://waiting.example/inbox"), keyed(2, "K", "https://waiting.example/inbox"))
	eventually(t, func() bool { return failed.Load() && g.inflight("waiting.example") == 0 }, "the first delivery failed")
	enqueueAll(t, q, note(0, "https://big.example/inbox"))
	eventually(t, func() bool { return g.inflight("big.example") == 1 }, "the big domain takes the whole cap")

	// Deliveries it could send come after the two waiting: it must read
	// them, though no slot is free and one delivery is untried.
	var acts []Activity
	for i := range 10 {
		acts = append(acts, note(i+3, "https://waiting.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	eventually(t, func() bool {
		q.slots.mu.Lock()
		defer q.slots.mu.Unlock()
		return len(q.slots.waiting) == 1
	}, "the domain reads on and waits for a slot for the next it can send")
	g.open("big.example")
	eventually(t, func() bool { return g.fake.DeliveredCount() == 11 }, "the ten and the big domain's delivered")
}

// pendingOf returns the deliveries dom holds, from Stats.
func pendingOf(t *testing.T, q *Queue, dom string) int {
	t.Helper()
	st, err := q.Stats(context.Background())
	require.NoError(t, err)
	for _, d := range st.Domains {
		if d.Domain == dom {
			return d.Pending
		}
	}
	t.Fatalf("no stats for %s", dom)
	return 0
}

func TestDomainLimitFuncGivesDomainsTheirOwnMaximum(t *testing.T) {
	t.Parallel()
	g := newGatedSender(nil)
	cfg := testConfig()
	cfg.FixedInFlight = true
	cfg.MaxInFlightPerDomain = 3
	cfg.DomainLimitFunc = func(dom string) int {
		switch dom {
		case "fragile.example":
			return 1
		case "big.example":
			return 8
		}
		return 0
	}
	q := startQueue(t, newMemory(), g.fake, cfg)
	var acts []Activity
	for i := range 20 {
		acts = append(acts, note(i, "https://fragile.example/inbox", "https://big.example/inbox", "https://other.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	want := map[string]int{"fragile.example": 1, "big.example": 8, "other.example": 3}
	eventually(t, func() bool {
		for dom, n := range want {
			if g.inflight(dom) != n {
				return false
			}
		}
		return true
	}, "each domain at its own maximum")
	ctx := context.Background()
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	for _, d := range st.Domains {
		require.Equal(t, want[d.Domain], d.InFlightMax, d.Domain)
		require.Equal(t, want[d.Domain], d.InFlightLimit, d.Domain)
	}
	for dom := range want {
		g.open(dom)
	}
	eventually(t, func() bool { return g.fake.DeliveredCount() == 60 }, "all delivered")
	require.Equal(t, 1, g.fake.MaxInFlight("fragile.example"), "the fragile domain got one request at a time")
	require.Equal(t, 8, g.fake.MaxInFlight("big.example"))

	// The global cap bounds a domain's own maximum too.
	cfg.MaxInFlight = 5
	q2, err := New(newMemory(), g.fake, cfg)
	require.NoError(t, err)
	require.Equal(t, 5, q2.domainLimit("big.example"))
	require.Equal(t, 1, q2.domainLimit("fragile.example"))
	require.Equal(t, 3, q2.domainLimit("other.example"))
}

func TestAdaptiveLimitGrowsOneAtATimeWhileTheCPUIsShort(t *testing.T) {
	t.Parallel()
	const dom = "far.example"
	g := newGatedSender(nil)
	cfg := testConfig()
	cfg.clock = clock.NewFake(time.Now()) // answers as fast as the best
	cfg.cpuSaturated = func() bool { return true }
	q := startQueue(t, newMemory(), g.fake, cfg)
	var acts []Activity
	for i := range 300 {
		acts = append(acts, note(i, "https://far.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	eventually(t, func() bool { return q.workerCount() == 1 }, "worker started")
	w := q.workerList()[0]
	limits := releaseRounds(t, g, w, dom, 6)
	require.Equal(t, InitialInFlightLimit, limits[0])
	for i := 1; i < len(limits); i++ {
		require.Contains(t, []int{limits[i-1], limits[i-1] + 1}, limits[i], "no slow start while short of CPU: %v", limits)
	}
	require.Greater(t, limits[len(limits)-1], InitialInFlightLimit, "answers as fast as the best still grow it: %v", limits)
	g.open(dom)
	eventuallyCount(t, g.fake.DeliveredCount, 300, "all delivered")
}

// releaseRounds waits, rounds times, until w has as many requests in flight
// as its limit, and answers them all at once; it returns the limit of each
// round.
func releaseRounds(t *testing.T, g *gatedSender, w *worker, dom string, rounds int) []int {
	t.Helper()
	var limits []int
	released := 0
	for range rounds {
		var limit int
		eventually(t, func() bool {
			s := w.snapshot()
			limit = s.InFlightLimit
			return s.Delivered == int64(released) && s.InFlight == limit && g.inflight(dom) == limit
		}, "the limit's requests in flight")
		limits = append(limits, limit)
		g.release(t, dom, limit)
		released += limit
	}
	return limits
}

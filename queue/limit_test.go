package queue

import (
	"container/heap"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/clock"
)

// receiver is a simulated remote domain for the limit's tests, on a fake
// clock: it answers in latency while it has fewer than capacity requests
// (0: no limit), and beyond either answers 503 at once or, when queueing,
// holds the request until a place frees (its latency grows with the queue).
type receiver struct {
	latency  time.Duration
	capacity int
	queueing bool
	down     bool // answers 503 to everything, at once
}

// limitSim drives an inflightLimit against a receiver with an endless
// backlog, as a worker would: it sends while the limit allows, and feeds
// every answer back when the fake clock reaches it.
type limitSim struct {
	t       *testing.T
	clk     *clock.Fake
	l       *inflightLimit
	rcv     *receiver
	flights flightHeap
	busy    int // requests the receiver is working on
	queued  []*flight
	// offered, when positive, is how many requests the backlog has each
	// second at most (an endless backlog when 0).
	offered   int
	offeredAt time.Time
	offeredN  int

	inflight, sent, accepted, refused int
	maxInflight                       int
	limits                            []int // the limit after every answer
	// cpuBusy is what the answers say of this process's CPU (cpuGauge).
	cpuBusy bool
}

type flight struct {
	at       time.Time
	seq      uint64
	inflight int
	sentAt   time.Time
	ok       bool
}

type flightHeap []*flight

func (h flightHeap) Len() int           { return len(h) }
func (h flightHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h flightHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *flightHeap) Push(x any)        { *h = append(*h, x.(*flight)) }
func (h *flightHeap) Pop() any {
	old := *h
	f := old[len(old)-1]
	*h = old[:len(old)-1]
	return f
}

func newLimitSim(t *testing.T, upper int, rcv *receiver) *limitSim {
	return &limitSim{t: t, clk: clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), l: newInflightLimit(upper, false), rcv: rcv}
}

// run simulates d of fake time.
func (s *limitSim) run(d time.Duration) {
	end := s.clk.Now().Add(d)
	for {
		s.send()
		if len(s.flights) == 0 {
			next := end
			if s.offered > 0 && s.offeredAt.Add(time.Second).Before(end) {
				next = s.offeredAt.Add(time.Second) // the backlog's next second
			}
			s.clk.Advance(next.Sub(s.clk.Now()))
			if next == end {
				return
			}
			continue
		}
		f := heap.Pop(&s.flights).(*flight)
		if f.at.After(end) {
			heap.Push(&s.flights, f)
			s.clk.Advance(end.Sub(s.clk.Now()))
			return
		}
		s.clk.Advance(f.at.Sub(s.clk.Now()))
		s.answer(f)
	}
}

func (s *limitSim) send() {
	now := s.clk.Now()
	for s.inflight < s.l.current() {
		if s.offered > 0 {
			if now.Sub(s.offeredAt) >= time.Second {
				s.offeredAt, s.offeredN = now, 0
			}
			if s.offeredN == s.offered {
				return
			}
			s.offeredN++
		}
		s.inflight++
		s.sent++
		s.maxInflight = max(s.maxInflight, s.inflight)
		f := &flight{seq: s.l.sending(), inflight: s.inflight, sentAt: now}
		switch {
		case s.rcv.down:
			f.at = now.Add(time.Millisecond)
		case s.rcv.capacity == 0 || s.busy < s.rcv.capacity:
			s.busy++
			f.ok, f.at = true, now.Add(s.rcv.latency)
		case s.rcv.queueing:
			f.ok = true
			s.queued = append(s.queued, f)
			continue
		default:
			f.at = now.Add(time.Millisecond)
		}
		heap.Push(&s.flights, f)
	}
}

func (s *limitSim) answer(f *flight) {
	now := s.clk.Now()
	s.inflight--
	if f.ok {
		s.busy--
		if len(s.queued) > 0 {
			next := s.queued[0]
			s.queued = s.queued[1:]
			s.busy++
			next.at = now.Add(s.rcv.latency)
			heap.Push(&s.flights, next)
		}
		s.accepted++
		s.l.onSuccess(now, answer{seq: f.seq, sentInflight: f.inflight, inflight: s.inflight + 1, latency: now.Sub(f.sentAt), cpuBusy: s.cpuBusy})
	} else {
		s.refused++
		s.l.onCongestion(now, f.seq, "503")
	}
	require.LessOrEqual(s.t, s.l.current(), s.l.max, "the limit never exceeds its maximum")
	require.GreaterOrEqual(s.t, s.l.current(), 1, "the limit never drops below one")
	s.limits = append(s.limits, s.l.current())
}

// reset starts counting anew, keeping the limit's state.
func (s *limitSim) reset() {
	s.sent, s.accepted, s.refused, s.maxInflight, s.limits = 0, 0, 0, 0, nil
}

func TestLimitGrowsToWhatAFarDomainTakes(t *testing.T) {
	t.Parallel()
	s := newLimitSim(t, 64, &receiver{latency: 200 * time.Millisecond})
	start := s.clk.Now()
	require.Equal(t, InitialInFlightLimit, s.l.current())
	s.run(2 * time.Second)
	// Slow start: the limit doubles each round trip, 4 → 64 in 4 of them.
	require.Equal(t, 64, s.l.current(), "a domain that answers every request in time gets the maximum")
	require.LessOrEqual(t, s.maxInflight, 64)
	require.Equal(t, 200*time.Millisecond, s.l.best)
	changes := s.l.recent()
	require.NotEmpty(t, changes)
	require.Equal(t, 64, changes[len(changes)-1].To)
	require.Equal(t, "grow", changes[len(changes)-1].Reason)
	require.Equal(t, start.Add(800*time.Millisecond), changes[len(changes)-1].At, "at the fourth round trip's answers, on the queue's clock")
}

func TestLimitDoesNotGrowWhenNotReached(t *testing.T) {
	t.Parallel()
	// One request a second to a domain answering in 200 ms: never more
	// than one in flight, so nothing says the domain would take more.
	s := newLimitSim(t, 64, &receiver{latency: 200 * time.Millisecond})
	s.offered = 1
	s.run(time.Minute)
	require.Equal(t, InitialInFlightLimit, s.l.current())
	require.Empty(t, s.l.recent())
	// Three at once: the limit grows while at least half of it is in
	// flight, to 8 (slow start doubles it), not further.
	s.offered = 3
	s.run(time.Minute)
	require.Equal(t, 8, s.l.current())
}

func TestLimitShrinksOnceAWindowToOne(t *testing.T) {
	t.Parallel()
	s := newLimitSim(t, 64, &receiver{latency: 100 * time.Millisecond})
	s.run(time.Second)
	require.Equal(t, 64, s.l.current())
	s.rcv.down = true
	s.reset()
	s.run(time.Second)
	// The 64 requests in flight at the higher limit decrease it once; then
	// each window of requests sent at the new limit once more.
	require.Equal(t, 1, s.l.current(), "a domain refusing everything is sent one request at a time")
	changes := s.l.recent()
	require.Len(t, changes, limitChangesKept)
	for _, c := range changes {
		require.Equal(t, "congestion: 503", c.Reason)
		require.Less(t, c.To, c.From)
		require.GreaterOrEqual(t, c.To, c.From*3/4-1, "a decrease is multiplicative, by a quarter")
	}
	// Requests sent at each limit until the decrease: 64, 48, 36, 27, …
	decreases := 0
	for i := 1; i < len(s.limits); i++ {
		if s.limits[i] < s.limits[i-1] {
			decreases++
		}
	}
	require.Equal(t, 12, decreases, "64 to 1 by a quarter each time (48, 36, 27, 20, 15, 11, 8, 6, 4, 3, 2, 1): once a window, not once an answer")
}

func TestLimitRecoversAfterTheDomainDoes(t *testing.T) {
	t.Parallel()
	s := newLimitSim(t, 64, &receiver{latency: 100 * time.Millisecond})
	s.run(time.Second)
	s.rcv.down = true
	s.run(time.Second)
	require.Equal(t, 1, s.l.current())
	s.rcv.down = false
	s.reset()
	// From 1, one more per window of successes: to 64 in about
	// 1+2+…+63 requests, 63 round trips.
	s.run(7 * time.Second)
	require.Equal(t, 64, s.l.current(), "back to the maximum once the domain answers again")
	require.LessOrEqual(t, s.refused, 1, "the request in flight when the domain came back")
}

func TestLimitSettlesUnderACapacityThatAnswers503(t *testing.T) {
	t.Parallel()
	// A domain that handles 3 requests at once and answers 503 beyond.
	const capacity, latency = 3, 100 * time.Millisecond
	s := newLimitSim(t, 64, &receiver{latency: latency, capacity: capacity})
	s.run(10 * time.Second)
	s.reset()
	settle := 5 * time.Minute
	s.run(settle)
	lo, hi := s.l.max, 0
	counts := map[int]int{}
	for _, l := range s.limits {
		lo, hi = min(lo, l), max(hi, l)
		counts[l]++
	}
	t.Logf("limits %v, accepted %d, refused %d", counts, s.accepted, s.refused)
	require.LessOrEqual(t, hi, 2*lo, "once settled, the limit does not oscillate by more than a factor of 2")
	require.GreaterOrEqual(t, lo, capacity-1)
	require.LessOrEqual(t, hi, capacity+1)
	require.Greater(t, counts[capacity], 9*len(s.limits)/10, "the limit settles at the capacity")
	best := float64(capacity) * settle.Seconds() / latency.Seconds() // the best fixed limit: 3, never refused
	require.GreaterOrEqual(t, float64(s.accepted), 0.9*best, "at least 0.9 of the best fixed limit's throughput")
	require.Less(t, float64(s.refused), 0.02*float64(s.sent), "fewer than 2 %% of the requests refused")
}

func TestLimitShrinksOnRisingLatency(t *testing.T) {
	t.Parallel()
	// A domain that works 4 requests at once and queues the rest: more
	// in flight only makes the answers slower. It starts at a limit of 32
	// (as if the domain had been faster before).
	const capacity, latency = 4, 100 * time.Millisecond
	s := newLimitSim(t, 64, &receiver{latency: latency, capacity: capacity, queueing: true})
	s.l.limit, s.l.slowStart, s.l.best = 32, false, latency
	s.run(10 * time.Second)
	var slow bool
	for _, c := range s.l.recent() {
		slow = slow || strings.HasPrefix(c.Reason, "congestion: slow: ")
	}
	require.True(t, slow, "the decreases are for slow answers: %v", s.l.recent())
	s.reset()
	s.run(2 * time.Minute)
	lo, hi := s.l.max, 0
	for _, l := range s.limits {
		lo, hi = min(lo, l), max(hi, l)
	}
	t.Logf("limit between %d and %d", lo, hi)
	require.LessOrEqual(t, hi, 3*capacity, "slow answers bring the limit near what the domain works at once, and late ones keep it from growing")
	require.LessOrEqual(t, hi, 2*lo, "without oscillating by more than a factor of 2")
	require.GreaterOrEqual(t, lo, capacity)
	require.GreaterOrEqual(t, float64(s.accepted), 0.99*float64(capacity)*120/latency.Seconds(), "without losing throughput")
}

func TestLimitNeverExceedsItsMaximum(t *testing.T) {
	t.Parallel()
	for _, upper := range []int{1, 2, 3, 5} {
		s := newLimitSim(t, upper, &receiver{latency: 10 * time.Millisecond})
		s.run(10 * time.Second)
		require.Equal(t, upper, s.l.current())
		require.Equal(t, upper, s.maxInflight, "maximum %d", upper)
	}
}

func TestFixedLimitDoesNotChange(t *testing.T) {
	t.Parallel()
	s := newLimitSim(t, 6, &receiver{latency: 10 * time.Millisecond, capacity: 3})
	s.l = newInflightLimit(6, true)
	s.run(10 * time.Second)
	require.Equal(t, 6, s.l.current())
	require.Empty(t, s.l.recent())
	require.Equal(t, 6, s.maxInflight)
}

func TestLimitStaysWhereItStartedWhenThisMachineIsTheBottleneck(t *testing.T) {
	t.Parallel()
	// A domain whose answers wait for this process's CPU: every request
	// more in flight lengthens every answer in proportion (a queueing
	// receiver that works InitialInFlightLimit at once), and throughput
	// stays the same whatever the limit.
	rcv := func() *receiver {
		return &receiver{latency: 10 * time.Millisecond, capacity: InitialInFlightLimit, queueing: true}
	}
	idle := newLimitSim(t, 64, rcv())
	idle.run(time.Minute)
	idle.reset()
	idle.run(time.Minute)
	require.GreaterOrEqual(t, slices.Max(idle.limits), 2*InitialInFlightLimit,
		"without the CPU gauge's word, latency within twice the best lets the limit double")

	busy := newLimitSim(t, 64, rcv())
	busy.cpuBusy = true
	busy.run(time.Minute)
	busy.reset()
	busy.run(time.Minute)
	require.Less(t, slices.Max(busy.limits), 2*InitialInFlightLimit,
		"short of CPU, the limit grows only on answers as fast as the best: %v", busy.l.recent())
	require.LessOrEqual(t, mean(busy.limits), float64(InitialInFlightLimit)+2, "it probes a few above, and comes back")
	require.GreaterOrEqual(t, slices.Min(busy.limits), InitialInFlightLimit, "and slowness alone does not take it below where it started")
	require.InDelta(t, idle.accepted, busy.accepted, float64(idle.accepted)/20, "the same throughput with fewer requests in flight")

	// A limit that grew before the CPU ran short comes back down.
	grown := newLimitSim(t, 64, rcv())
	grown.run(time.Minute)
	require.Greater(t, grown.l.current(), InitialInFlightLimit+1)
	grown.cpuBusy = true
	grown.reset()
	grown.run(10 * time.Second)
	require.Less(t, grown.l.current(), 2*InitialInFlightLimit, "changes: %v", grown.l.recent())
	require.Contains(t, grown.l.recent()[len(grown.l.recent())-1].Reason+" "+reasons(grown.l.recent()), "cpu busy")
}

func TestLimitGrowsToAFarDomainWhileTheCPUIsShort(t *testing.T) {
	t.Parallel()
	// A domain 200 ms away answers as fast as its best however many
	// requests are in flight: a busy CPU is no reason to hold it back, but
	// the limit grows one at a time instead of doubling.
	s := newLimitSim(t, 64, &receiver{latency: 200 * time.Millisecond})
	s.cpuBusy = true
	s.run(2 * time.Second)
	require.Less(t, s.l.current(), 16, "no slow start while short of CPU")
	s.run(time.Minute)
	require.Equal(t, 64, s.l.current(), "changes: %v", s.l.recent())
}

func TestSlowAnswersWhileTheCPUIsShortKeepTheStartingLimit(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newInflightLimit(64, false)
	for i := range 8 {
		seq := l.sending()
		latency := 10 * time.Millisecond
		if i >= 4 {
			latency = time.Second // far beyond twice the best
		}
		l.onSuccess(now, answer{seq: seq, sentInflight: 4, inflight: 4, latency: latency, cpuBusy: true})
	}
	require.Equal(t, InitialInFlightLimit, l.current(), "slow answers while this machine is short of CPU: %v", l.recent())
	l.onCongestion(now, l.sending(), "503")
	require.Equal(t, 3, l.current(), "a 503 still counts")
}

// reasons joins the changes' reasons.
func reasons(changes []LimitChange) string {
	var b strings.Builder
	for _, c := range changes {
		b.WriteString(c.Reason)
		b.WriteString("; ")
	}
	return b.String()
}

func mean(xs []int) float64 {
	sum := 0
	for _, x := range xs {
		sum += x
	}
	return float64(sum) / float64(len(xs))
}

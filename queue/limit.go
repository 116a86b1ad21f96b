package queue

import (
	"time"
)

// InitialInFlightLimit is where a domain's adaptive in-flight limit starts
// when this process takes the domain (or its maximum, when that is lower).
const InitialInFlightLimit = 4

// The adaptive in-flight limit's tuning. They are not configuration: the
// limit needs none beyond its bounds (Config.MaxInFlightPerDomain,
// Config.DomainLimitFunc, Config.MaxInFlight).
const (
	// limitDecrease is the multiplicative decrease on a congestion signal:
	// 4 becomes 3, 64 becomes 48.
	limitDecrease = 0.75
	// limitProbeWindows is how many windows without congestion the limit
	// stays one below the level where the domain last pushed back before it
	// tries that level again: about one refused request per this many
	// windows once the limit has settled.
	limitProbeWindows = 48
	// latencyTolerance and latencySlack say when an answer is slow: later
	// than latencyTolerance × the domain's best latency plus latencySlack.
	// A slow answer is a congestion signal, like a 503.
	latencyTolerance = 2
	latencySlack     = 50 * time.Millisecond
	// growSlack: the limit grows only while a window's answers take, on
	// average, at most latencyTolerance × the best latency plus growSlack:
	// more requests in flight that only queue somewhere (at the receiver,
	// or for this machine's CPU) and come back later each are no reason
	// for more. Up to latencyTolerance × best plus lateSlack the limit
	// holds; beyond, it loses one per window down to InitialInFlightLimit:
	// requests that only queue.
	growSlack = time.Millisecond
	lateSlack = 5 * time.Millisecond
	// busyTolerance: while this process is short of CPU (cpuGauge), the
	// limit grows only on windows whose answers took at most busyTolerance
	// × the best latency plus growSlack, and a window whose answers took
	// longer takes it back to InitialInFlightLimit. Every domain's
	// answers then wait for this machine, one domain's extra request
	// barely slows its own answers, and all of them growing together only
	// lengthens the queue for the CPU: a domain far away still grows (its
	// answers stay near its best), one the machine is the bottleneck for
	// returns to where it started.
	busyTolerance = 1.25
	// bestLatencyWindow is how many answers the best latency is renewed
	// after (see observeLatency), so that a domain that moved further away
	// is not judged by a best it can no longer reach.
	bestLatencyWindow = 256
	// limitChangesKept is how many recent changes Stats shows.
	limitChangesKept = 8
)

// LimitChange is one change of a domain's adaptive in-flight limit.
type LimitChange struct {
	// At is when the limit changed.
	At time.Time `json:"at"`
	// From and To are the limit before and after.
	From int `json:"from"`
	To   int `json:"to"`
	// Reason says why: "grow", "probe", "congestion: ..." or "slow: ...".
	Reason string `json:"reason"`
}

// inflightLimit is a domain's in-flight limit: additive increase,
// multiplicative decrease (AIMD), with a slow start and a plateau below the
// level where the domain last pushed back (see the package documentation).
// It belongs to the worker's run goroutine, like the rest of the worker's
// state.
type inflightLimit struct {
	limit int
	max   int
	fixed bool

	slowStart bool          // double per window until a congestion or a late window
	ceiling   int           // the limit at the last congestion; 0 when none is known
	successes int           // successes in the current window, since the last change
	latencies time.Duration // the sum of the current window's successes' latencies
	plateau   int           // windows spent one below the ceiling
	changedAt uint64        // the number of the last request sent before the last change

	sent    uint64 // sequence number of the next request
	recover uint64 // answers to requests sent before this do not decrease again

	best    time.Duration // lowest latency (see observeLatency)
	loneMin time.Duration // lowest latency of a lone request this window
	windowN int

	changes []LimitChange // a ring of limitChangesKept, made at the first change
	next    int
	total   int // changes since the start, to tell when recent changed
}

// newInflightLimit returns a limit between 1 and upper (at least 1);
// fixed keeps it at upper.
func newInflightLimit(upper int, fixed bool) *inflightLimit {
	upper = max(upper, 1)
	l := &inflightLimit{max: upper, fixed: fixed, limit: upper}
	if !fixed {
		l.limit = min(InitialInFlightLimit, upper)
		l.slowStart = true
	}
	return l
}

// current returns the limit.
func (l *inflightLimit) current() int { return l.limit }

// sending numbers a request about to be sent, for onCongestion.
func (l *inflightLimit) sending() uint64 {
	l.sent++
	return l.sent
}

// answer is what the limit learns from one answer.
type answer struct {
	seq uint64 // the request's number (sending)
	// sentInflight is how many requests to the domain were in flight when
	// it was sent, itself included; inflight how many when it was answered.
	sentInflight, inflight int
	latency                time.Duration
	// cpuBusy says this process was short of CPU when it was answered.
	cpuBusy bool
}

// onSuccess records an accepted request. A success while the limit was far
// from reached (fewer than half of it in flight) says nothing about a
// higher limit, and does not grow it.
func (l *inflightLimit) onSuccess(now time.Time, a answer) {
	slow := l.observeLatency(a.latency, a.sentInflight)
	if l.fixed {
		return
	}
	if slow && a.cpuBusy {
		// While this process is short of CPU, a slow answer may be this
		// machine's doing, not the domain's: it takes the limit back to
		// where it started, not below (a 503, a timeout or a
		// refused connection still does), and says nothing of the
		// domain's capacity (no ceiling).
		if l.limit > InitialInFlightLimit && a.seq >= l.recover {
			l.slowStart = false
			l.recover = l.sent + 1
			l.set(now, InitialInFlightLimit, "cpu busy: slow: "+a.latency.Round(time.Millisecond).String()+", best "+l.best.Round(time.Millisecond).String())
		}
		return
	}
	if slow {
		if a.seq >= l.recover { // else not worth the reason's string
			l.onCongestion(now, a.seq, "slow: "+a.latency.Round(time.Millisecond).String()+", best "+l.best.Round(time.Millisecond).String())
		}
		return
	}
	if 2*a.inflight < l.limit || l.limit >= l.max {
		return
	}
	if a.cpuBusy && a.seq <= l.changedAt+uint64(l.limit) {
		// Short of CPU, the limit is judged only on answers to requests
		// sent at it, after a window of them: the answers of a lower
		// limit came sooner, and the process's queue for the CPU builds up
		// only after a while.
		return
	}
	l.successes++
	l.latencies += a.latency
	if l.successes < l.limit {
		return
	}
	// A full window of successes: twice as many in slow start, else one
	// more, unless its answers came late.
	mean := l.latencies / time.Duration(l.successes)
	switch {
	case a.cpuBusy && mean > time.Duration(busyTolerance*float64(l.best))+growSlack:
		l.slowStart = false
		if l.limit > InitialInFlightLimit {
			l.set(now, InitialInFlightLimit, "cpu busy: "+mean.Round(100*time.Microsecond).String()+" on average, best "+l.best.Round(100*time.Microsecond).String())
		} else {
			l.successes, l.latencies = 0, 0
		}
	case mean > latencyTolerance*l.best+lateSlack && l.limit > InitialInFlightLimit:
		// Not below where it started: a domain whose answers vary widely
		// (a long tail over a low best) keeps what a fixed limit gave it.
		l.slowStart = false
		l.set(now, l.limit-1, "late: "+mean.Round(time.Millisecond).String()+" on average, best "+l.best.Round(time.Millisecond).String())
		l.successes, l.latencies = 0, 0
	case mean > latencyTolerance*l.best+growSlack:
		l.successes, l.latencies = 0, 0
		l.slowStart = false
	case l.slowStart && a.cpuBusy:
		// Short of CPU: one more at a time, each on its own evidence.
		l.slowStart = false
		l.set(now, l.limit+1, "grow")
	case l.slowStart:
		l.set(now, 2*l.limit, "grow")
	case l.ceiling == 0 || l.limit+1 < l.ceiling:
		l.set(now, l.limit+1, "grow")
	case l.limit >= l.ceiling:
		// A full window at the level the domain last refused: what it
		// takes has grown.
		l.ceiling = 0
		l.set(now, l.limit+1, "grow")
	default: // one below the ceiling
		l.successes, l.latencies = 0, 0
		l.plateau++
		if l.plateau >= limitProbeWindows {
			l.set(now, l.limit+1, "probe")
		}
	}
}

// onCongestion records that the domain pushed back (429, 503, a timeout, a
// connection error, a slow answer) at a request numbered seq. The limit
// decreases once per window: answers to requests sent before the last
// decrease were sent at the higher limit, and do not decrease it again.
func (l *inflightLimit) onCongestion(now time.Time, seq uint64, reason string) {
	if l.fixed || seq < l.recover {
		return
	}
	l.slowStart = false
	l.ceiling = l.limit
	l.recover = l.sent + 1
	l.set(now, max(1, int(float64(l.limit)*limitDecrease)), "congestion: "+reason)
}

// set changes the limit within its bounds, starting a new window.
func (l *inflightLimit) set(now time.Time, to int, reason string) {
	to = min(max(to, 1), l.max)
	l.successes, l.latencies, l.plateau = 0, 0, 0
	if to == l.limit {
		return
	}
	c := LimitChange{At: now, From: l.limit, To: to, Reason: reason}
	if len(l.changes) < limitChangesKept {
		l.changes = append(l.changes, c)
	} else {
		l.changes[l.next] = c
		l.next = (l.next + 1) % limitChangesKept
	}
	l.total++
	l.limit = to
	l.changedAt = l.sent
}

// observeLatency keeps the best latency and reports whether latency is slow
// against it. The best is the lowest latency seen; every
// bestLatencyWindow answers it is renewed from the answers to requests
// sent alone in that window (none in flight beside them, so not slowed by
// the domain's own queue of them), if there were any: a domain that moved
// further away gets slow answers, its limit shrinks to one, and the
// answers then renew its best.
func (l *inflightLimit) observeLatency(latency time.Duration, sentInflight int) (slow bool) {
	if latency <= 0 {
		return false
	}
	slow = l.best > 0 && latency > latencyTolerance*l.best+latencySlack
	if l.best == 0 || latency < l.best {
		l.best = latency
	}
	if sentInflight <= 1 && (l.loneMin == 0 || latency < l.loneMin) {
		l.loneMin = latency
	}
	l.windowN++
	if l.windowN == bestLatencyWindow {
		if l.loneMin > 0 {
			l.best = l.loneMin
		}
		l.windowN, l.loneMin = 0, 0
	}
	return slow
}

// recent returns the recorded changes, oldest first.
func (l *inflightLimit) recent() []LimitChange {
	if len(l.changes) == 0 {
		return nil
	}
	out := make([]LimitChange, 0, len(l.changes))
	out = append(out, l.changes[l.next:]...)
	return append(out, l.changes[:l.next]...)
}

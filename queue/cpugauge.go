package queue

import (
	"context"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// The CPU gauge's tuning: every cpuGaugeInterval it reads how long this
// process's goroutines waited to run, and calls the CPU saturated when at
// least cpuBusyShare of the waits in the interval took cpuBusyWait or more,
// out of at least cpuBusyMinWaits (too few waits say nothing). An idle or
// merely busy process waits microseconds; one whose goroutines queue for
// the CPU waits milliseconds: with 100 domains answering at once on two
// cores, about an eighth of the waits last a millisecond or more, against
// none with one domain 200 ms away.
const (
	cpuGaugeInterval = 100 * time.Millisecond
	cpuBusyWait      = time.Millisecond
	cpuBusyShare     = 0.05
	cpuBusyMinWaits  = 50
)

// schedLatencies is the runtime metric the gauge reads: the distribution of
// the time goroutines spent runnable before they ran.
const schedLatencies = "/sched/latencies:seconds"

// cpuGauge tells whether this process is short of CPU, so that the
// adaptive in-flight limits do not grow on latency that only this machine
// adds: when every domain's answers take longer because the process cannot
// run their handlers sooner, more requests in flight add work, not
// throughput. It belongs to its run goroutine; workers read busy.
type cpuGauge struct {
	busy atomic.Bool

	sample []metrics.Sample
	prev   []uint64 // the histogram's counts at the last reading
}

func newCPUGauge() *cpuGauge {
	return &cpuGauge{sample: []metrics.Sample{{Name: schedLatencies}}}
}

// saturated reports whether the process waited for CPU in the last
// interval.
func (g *cpuGauge) saturated() bool { return g.busy.Load() }

// run reads the scheduler's latencies every cpuGaugeInterval until ctx
// ends; the queue is never called saturated once it stops.
func (g *cpuGauge) run(ctx context.Context) {
	defer g.busy.Store(false)
	ticker := time.NewTicker(cpuGaugeInterval)
	defer ticker.Stop()
	g.read() // the baseline the first interval is measured from
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			g.busy.Store(g.read())
		}
	}
}

// read takes the scheduler's latency histogram and reports whether the
// waits since the previous reading say the CPU is saturated.
func (g *cpuGauge) read() bool {
	metrics.Read(g.sample)
	if g.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return false // a runtime without the metric: never saturated
	}
	h := g.sample[0].Value.Float64Histogram()
	busy := false
	if len(g.prev) == len(h.Counts) {
		busy = schedSaturated(h.Buckets, h.Counts, g.prev)
	}
	g.prev = append(g.prev[:0], h.Counts...)
	return busy
}

// schedSaturated applies the gauge's rule to the waits counted between two
// readings of the histogram (buckets are its boundaries in seconds: count i
// is of waits in [buckets[i], buckets[i+1])).
func schedSaturated(buckets []float64, counts, prev []uint64) bool {
	var waits, long uint64
	for i, c := range counts {
		n := c - prev[i]
		waits += n
		if buckets[i] >= cpuBusyWait.Seconds() {
			long += n
		}
	}
	return waits >= cpuBusyMinWaits && float64(long) >= cpuBusyShare*float64(waits)
}

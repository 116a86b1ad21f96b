package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// report is what a run measured.
type report struct {
	scenario           string
	opts               *options
	loadStart, loadEnd string

	// Delivery runs.
	activities                      int
	expected, delivered, duplicates int64
	requests, failed, rejected      int64
	retries, deadLetters            int64
	elapsed                         time.Duration // first enqueue to last delivery
	enqueueElapsed                  time.Duration
	p50, p90, p99, maxLatency       time.Duration
	missingExample                  string
	leaseWait                       time.Duration

	hasStatements    bool
	statements       int64 // over the run, appends excluded
	appendStatements int64
	hasSteady        bool
	steadyStatements float64 // per delivery, 10% to 90% of deliveries, appends excluded

	peakHeap, peakSys           uint64
	childPeakHeap, childPeakSys uint64

	concurrency int
	// Baseline measurements, per second, before and after the queue ran.
	bareRuns, rawSignRuns []float64

	fanout []fanoutRow
	idle   *idleMemory
}

func (r *report) deliveriesPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.delivered) / r.elapsed.Seconds()
}

func (r *report) enqueueRate() float64 {
	if r.enqueueElapsed <= 0 {
		return 0
	}
	return float64(r.activities) / r.enqueueElapsed.Seconds()
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// bare is the bare POST loop's mean rate, rawSign the raw signing rate's.
func (r *report) bare() float64    { return mean(r.bareRuns) }
func (r *report) rawSign() float64 { return mean(r.rawSignRuns) }

// queueBareRatio is queue deliveries/s over bare POST loop deliveries/s.
func (r *report) queueBareRatio() float64 {
	if r.bare() == 0 {
		return 0
	}
	return r.deliveriesPerSec() / r.bare()
}

// signRatio is signed deliveries/s over raw RSA signatures/s.
func (r *report) signRatio() float64 {
	if r.rawSign() == 0 {
		return 0
	}
	return r.deliveriesPerSec() / r.rawSign()
}

func runs(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(parts, " before, ") + map[bool]string{true: " after", false: " before"}[len(xs) > 1]
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func (r *report) print(w io.Writer) {
	o := r.opts
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("apqueue load test — scenario %s", r.scenario)
	p("  machine        %d CPUs, GOMAXPROCS %d, %s, load average %s at start, %s at end", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), r.loadStart, r.loadEnd)
	switch {
	case r.fanout != nil:
		r.printFanout(p)
	case r.idle != nil:
		r.printIdle(p)
	case r.scenario == scenarioEnqueue:
		r.printEnqueue(p)
	default:
		r.printDeliveries(p, o)
	}
}

func (r *report) printDeliveries(p func(string, ...any), o *options) {
	inflight := fmt.Sprint(o.maxInFlight)
	if o.maxInFlight == 0 {
		inflight = "default"
	}
	store := o.store
	if o.dbLatency > 0 {
		store += fmt.Sprintf(" (+%s round trip through the proxy)", o.dbLatency)
	}
	p("  setup          %d domains, %d activities, fan-out %s (%d domains each), store %s, signing %v, max in flight %s, %d worker(s) %s",
		o.domains, r.activities, o.fanout, o.recipientsPerActivity(), store, o.sign, inflight, o.workers, o.workerMode)
	p("  inboxes        latency %s, fail rate %g, Retry-After %q", o.inboxLatency, o.failRate, o.retryAfter)
	if o.newDomains {
		p("  domains        introduced by the first activity addressed to them (-new-domains)")
	} else {
		p("  domains        registered and leased %s before the first enqueue", r.leaseWait.Round(time.Millisecond))
	}
	p("  delivered      %d of %d, duplicates %d, retries %d, dead letters %d (inboxes: %d requests, %d answered 503, %d rejected)",
		r.delivered, r.expected, r.duplicates, r.retries, r.deadLetters, r.requests, r.failed, r.rejected)
	if r.missingExample != "" {
		p("  MISSING        %s", r.missingExample)
	}
	p("  throughput     %.0f deliveries/s (first enqueue to last delivery: %s)", r.deliveriesPerSec(), r.elapsed.Round(time.Millisecond))
	if o.rate > 0 {
		p("  enqueue        %d activities at %.4g/s asked, %.4g/s achieved (one Enqueue each)", r.activities, o.rate, r.enqueueRate())
	} else {
		p("  enqueue        %d activities in %s: %.0f activities/s (EnqueueMany of %d)", r.activities, r.enqueueElapsed.Round(time.Millisecond), r.enqueueRate(), o.batch)
	}
	p("  latency        enqueue to delivery p50 %s, p90 %s, p99 %s, max %s", ms(r.p50), ms(r.p90), ms(r.p99), ms(r.maxLatency))
	if r.hasStatements {
		steady := "n/a (too few samples)"
		if r.hasSteady {
			steady = fmt.Sprintf("%.4f", r.steadyStatements)
		}
		perRun := 0.0
		if r.delivered > 0 {
			perRun = float64(r.statements) / float64(r.delivered)
		}
		p("  statements     %s per delivery at steady state (10%%–90%% of deliveries), %.4f over the run (%d statements; the %d appends excluded)",
			steady, perRun, r.statements, r.appendStatements)
	}
	p("  memory         peak heap in use %s, peak Sys %s (this process: inboxes included)", mib(r.peakHeap), mib(r.peakSys))
	if r.childPeakSys > 0 {
		p("  worker memory  peak heap in use %s, peak Sys %s (largest worker process)", mib(r.childPeakHeap), mib(r.childPeakSys))
	}
	if len(r.bareRuns) > 0 {
		p("  bare POST loop %.0f deliveries/s (%s the queue), %d goroutines, same sender and inboxes, no queue", r.bare(), runs(r.bareRuns), r.concurrency)
		p("  queue/bare     %.2f", r.queueBareRatio())
	}
	if len(r.rawSignRuns) > 0 {
		p("  raw RSA signing %.0f signatures/s (%s the queue; RSA-2048, PKCS#1 v1.5, SHA-256, %d goroutines)", r.rawSign(), runs(r.rawSignRuns), runtime.GOMAXPROCS(0))
		p("  signed/raw-sign %.2f", r.signRatio())
	}
}

func (r *report) printFanout(p func(string, ...any)) {
	o := r.opts
	p("  setup          store %s, %d sequential Enqueue calls per case, best of 3 interleaved rounds; queues not started", o.store, o.activities)
	var base time.Duration
	for _, row := range r.fanout {
		if row.name == "audience" && row.domains == 1 {
			base = row.perOp
		}
	}
	for _, row := range r.fanout {
		ratio := ""
		if base > 0 {
			ratio = fmt.Sprintf("  %.2f× audience to 1 domain", float64(row.perOp)/float64(base))
		}
		p("  %-16s to %5d domain(s): %8.1f µs per Enqueue%s", row.name, row.domains, float64(row.perOp)/float64(time.Microsecond), ratio)
	}
}

func (r *report) printIdle(p func(string, ...any)) {
	m := r.idle
	n := float64(m.domains)
	p("  setup          store %s, %d idle domains, one queue", r.opts.store, m.domains)
	p("  leases         every domain worked after %s", m.leaseWait.Round(time.Millisecond))
	p("  heap           %s at start, %s with the domains stored, %s with the queue working them",
		mib(m.heapStart), mib(m.heapStored), mib(m.heapRunning))
	p("  per domain     %.1f KiB heap in total, %.1f KiB of it the queue's; %.1f KiB of goroutine stack; %d goroutines",
		float64(m.heapRunning-m.heapStart)/n/1024, float64(int64(m.heapRunning)-int64(m.heapStored))/n/1024,
		float64(int64(m.stackRunning)-int64(m.stackBefore))/n/1024, m.goroutines)
}

func (r *report) printEnqueue(p func(string, ...any)) {
	o := r.opts
	p("  setup          store %s, EnqueueMany of %d activities (one explicit inbox each), %d goroutine(s); queue not started", o.store, o.batch, o.enqueuers)
	p("  enqueue        %d activities in %s: %.0f activities/s", r.activities, r.enqueueElapsed.Round(time.Millisecond), r.enqueueRate())
	if r.hasStatements {
		p("  statements     %d for %d batches", r.appendStatements, (r.activities+o.batch-1)/o.batch)
	}
}

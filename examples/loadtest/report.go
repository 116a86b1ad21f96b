package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/apqueue/apqueue/queue"
)

// report is what a run measured.
type report struct {
	scenario           string
	opts               *options
	loadStart, loadEnd string

	// Delivery runs: totals over the rounds, and each round.
	rounds                          []round
	activities                      int // per round
	expected, delivered, duplicates int64
	requests, failed, rejected      int64
	retries, deadLetters            int64
	reasons                         []string // most frequent retry and dead-letter reasons
	p50, p90, p99, maxLatency       time.Duration
	missingExample                  string
	leaseWait                       time.Duration
	hasStatements                   bool

	peakHeap, peakSys           uint64
	childPeakHeap, childPeakSys uint64

	// limits are the domains' in-flight limits when the last round ended
	// (queues in this process only).
	limits []queue.DomainStats

	concurrency int
	// Baseline measurements, per second: before the first round and after
	// each.
	bareRuns, rawSignRuns []rate

	// The enqueue scenario.
	enqueueElapsed   time.Duration
	appendStatements int64

	fanout   []fanoutRow
	idle     *idleMemory
	instance *instanceReport
	backlog  *backlogReport
	restart  *restartReport
	contrast *contrast
	faults   *faultsRun
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// perRound applies f to every round.
func (r *report) perRound(f func(i int, rd round) float64) []float64 {
	out := make([]float64, len(r.rounds))
	for i, rd := range r.rounds {
		out[i] = f(i, rd)
	}
	return out
}

// deliveriesPerSec is the median over the rounds.
func (r *report) deliveriesPerSec() float64 {
	return median(r.perRound(func(_ int, rd round) float64 { return rd.deliveriesPerSec() }))
}

// around is the mean of the baseline runs just before and after round i.
func around(runs []rate, i int) rate {
	switch {
	case i+1 < len(runs):
		return rate{(runs[i].wall + runs[i+1].wall) / 2, (runs[i].cpu + runs[i+1].cpu) / 2}
	case i < len(runs):
		return runs[i]
	}
	return rate{}
}

// ratios returns each round's deliveries per second and per CPU-second over
// the baseline's around it.
func (r *report) ratios(runs []rate) (wall, cpu []float64) {
	if len(runs) == 0 {
		return nil, nil
	}
	for i, rd := range r.rounds {
		b, q := around(runs, i), rd.rate()
		var w, c float64
		if b.wall > 0 {
			w = q.wall / b.wall
		}
		if b.cpu > 0 {
			c = q.cpu / b.cpu
		}
		wall, cpu = append(wall, w), append(cpu, c)
	}
	return wall, cpu
}

// queueBareRatio is the median over the rounds of queue deliveries/s over
// the bare POST loop's deliveries/s around the round.
func (r *report) queueBareRatio() float64 {
	w, _ := r.ratios(r.bareRuns)
	return median(w)
}

// signRatio is the same with the raw RSA signing rate.
func (r *report) signRatio() float64 {
	w, _ := r.ratios(r.rawSignRuns)
	return median(w)
}

func walls(runs []rate) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = r.wall
	}
	return out
}

func cpus(runs []rate) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = r.cpu
	}
	return out
}

func (r *report) bare() float64    { return median(walls(r.bareRuns)) }
func (r *report) rawSign() float64 { return median(walls(r.rawSignRuns)) }

// enqueueRate is the enqueue scenario's rate, or the median of the rounds'.
func (r *report) enqueueRate() float64 {
	if len(r.rounds) == 0 {
		if r.enqueueElapsed <= 0 {
			return 0
		}
		return float64(r.activities) / r.enqueueElapsed.Seconds()
	}
	return median(r.perRound(func(_ int, rd round) float64 {
		if rd.enqueueElapsed <= 0 {
			return 0
		}
		return float64(r.activities) / rd.enqueueElapsed.Seconds()
	}))
}

func list(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, ", ")
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
	case r.instance != nil:
		r.instance.print(p, o)
	case r.backlog != nil:
		r.backlog.print(p, o)
	case r.restart != nil:
		r.restart.print(p, o)
	case r.faults != nil:
		r.printFaults(p)
	case r.contrast != nil:
		r.printContrast(p)
	case r.scenario == scenarioEnqueue:
		r.printEnqueue(p)
	default:
		r.printDeliveries(p, o)
	}
}

// printLimits prints the domains' in-flight limits at the end of the run,
// and with one domain its last changes.
func (r *report) printLimits(p func(string, ...any), o *options) {
	if len(r.limits) == 0 {
		return
	}
	limits := make([]float64, len(r.limits))
	for i, d := range r.limits {
		limits[i] = float64(d.InFlightLimit)
	}
	slices.Sort(limits)
	mode := "adaptive"
	if o.fixedLimit {
		mode = "fixed"
	}
	p("  in-flight      %s limit at the end: min %.0f, median %.0f, max %.0f over %d domains (maximum %d)",
		mode, limits[0], median(limits), limits[len(limits)-1], len(limits), r.limits[0].InFlightMax)
	best, p50 := make([]float64, len(r.limits)), make([]float64, len(r.limits))
	for i, d := range r.limits {
		best[i], p50[i] = float64(d.BestLatency)/1e6, float64(d.LatencyP50)/1e6
	}
	p("                 median over the domains: best latency %.2f ms, latency p50 %.2f ms (last deliveries)", median(best), median(p50))
	if len(r.limits) == 1 {
		d := r.limits[0]
		p("                 best latency %s; last changes:", ms(d.BestLatency))
		for _, c := range d.LimitChanges {
			p("                 %s %d→%d %s", c.At.Format("15:04:05.000"), c.From, c.To, c.Reason)
		}
	}
}

func (r *report) printDeliveries(p func(string, ...any), o *options) {
	inflight := fmt.Sprint(o.maxInFlight)
	if o.maxInFlight == 0 {
		inflight = "default"
	}
	if o.fixedLimit {
		inflight += " (fixed)"
	} else {
		inflight += " (adaptive)"
	}
	switch {
	case o.globalCap > 0:
		inflight += fmt.Sprintf(", %d across all domains", o.globalCap)
	case o.globalCap == 0:
		inflight += fmt.Sprintf(", %d across all domains (default)", queue.MaxInFlightDefault)
	default:
		inflight += ", no cap across domains"
	}
	store := o.store
	if o.dbLatency > 0 {
		store += fmt.Sprintf(" (+%s round trip through the proxy)", o.dbLatency)
	}
	signing := "off"
	if o.sign {
		signing = o.signScheme
	}
	p("  setup          %d domains, %d activities a round, fan-out %s (%d domains each), store %s, signing %s, max in flight %s, %d worker(s) %s",
		o.domains, r.activities, o.fanout, o.recipientsPerActivity(), store, signing, inflight, o.workers, o.workerMode)
	p("  inboxes        latency %s, fail rate %g, Retry-After %q, capacity %d (0: none)", o.inboxLatency, o.failRate, o.retryAfter, o.inboxCapacity)
	if o.newDomains {
		p("  domains        introduced by the first activity addressed to them (-new-domains)")
	} else {
		p("  domains        registered and leased %s before the first enqueue", r.leaseWait.Round(time.Millisecond))
	}
	p("  delivered      %d of %d, duplicates %d, retries %d, dead letters %d (inboxes: %d requests, %d answered 503, %d rejected)",
		r.delivered, r.expected, r.duplicates, r.retries, r.deadLetters, r.requests, r.failed, r.rejected)
	for _, reason := range r.reasons {
		p("    because      %s", reason)
	}
	if r.missingExample != "" {
		p("  MISSING        %s", r.missingExample)
	}
	dps := r.perRound(func(_ int, rd round) float64 { return rd.deliveriesPerSec() })
	if len(r.rounds) > 1 {
		p("  throughput     %.0f deliveries/s, median of %d rounds (%s)", r.deliveriesPerSec(), len(r.rounds), list(dps, "%.0f"))
	} else if len(r.rounds) == 1 {
		p("  throughput     %.0f deliveries/s (first enqueue to last delivery: %s)", r.deliveriesPerSec(), r.rounds[0].elapsed.Round(time.Millisecond))
	}
	pauses := r.perRound(func(_ int, rd round) float64 { return float64(rd.longestPause) / float64(time.Millisecond) })
	slowest := r.perRound(func(_ int, rd round) float64 { return float64(rd.slowestEnqueue) / float64(time.Millisecond) })
	p("  longest pause  %s ms without a new delivery; slowest enqueue call %s ms (per round)", list(pauses, "%.0f"), list(slowest, "%.0f"))
	if o.rate > 0 {
		p("  enqueue        %d activities a round at %.4g/s asked, %.4g/s achieved (one Enqueue each)", r.activities, o.rate, r.enqueueRate())
	} else {
		p("  enqueue        %d activities a round, %.0f activities/s (EnqueueMany of %d, while delivering)", r.activities, r.enqueueRate(), o.batch)
	}
	p("  latency        enqueue to delivery p50 %s, p90 %s, p99 %s, max %s", ms(r.p50), ms(r.p90), ms(r.p99), ms(r.maxLatency))
	if r.requests > 0 && o.inboxCapacity > 0 {
		p("  capacity       each inbox works %d requests at once: %.2f%% of the requests answered 503", o.inboxCapacity, 100*float64(r.failed)/float64(r.requests))
	}
	r.printLimits(p, o)
	if o.dbAlternate {
		var without, with []float64
		for i, rd := range r.rounds {
			if dbLatencyOfRound(o, i) == 0 {
				without = append(without, rd.deliveriesPerSec())
			} else {
				with = append(with, rd.deliveriesPerSec())
			}
		}
		if len(with) > 0 && median(without) > 0 {
			p("  db latency     %.0f deliveries/s with +%s (rounds %s), %.0f with +0 (rounds %s): ratio %.2f",
				median(with), o.dbLatency, list(with, "%.0f"), median(without), list(without, "%.0f"), median(with)/median(without))
		}
	}
	if r.hasStatements {
		var stmts, appends, delivered int64
		var steady []float64
		for _, rd := range r.rounds {
			stmts, appends, delivered = stmts+rd.statements, appends+rd.appends, delivered+rd.delivered
			if rd.hasSteady {
				steady = append(steady, rd.steady)
			}
		}
		perRun := 0.0
		if delivered > 0 {
			perRun = float64(stmts) / float64(delivered)
		}
		st := "n/a (too few samples)"
		if len(steady) > 0 {
			st = fmt.Sprintf("%.4f", median(steady))
		}
		p("  statements     %s per delivery at steady state (10%%–90%% of a round's deliveries, median), %.4f over the rounds (%d statements; the %d appends excluded)",
			st, perRun, stmts, appends)
	}
	p("  memory         peak heap in use %s, peak Sys %s (this process: inboxes included)", mib(r.peakHeap), mib(r.peakSys))
	if r.childPeakSys > 0 {
		p("  worker memory  peak heap in use %s, peak Sys %s (largest worker process)", mib(r.childPeakHeap), mib(r.childPeakSys))
	}
	perCPU := r.perRound(func(_ int, rd round) float64 { return rd.rate().cpu })
	p("  per CPU-second %.0f deliveries (rounds %s; CPU of this process%s)", median(perCPU), list(perCPU, "%.0f"),
		map[bool]string{true: " and the worker processes", false: ""}[o.workerMode == "exec"])
	for _, b := range []struct {
		name, unit, ratio string
		runs              []rate
	}{
		{"bare POST loop", "deliveries", "queue/bare", r.bareRuns},
		{"raw RSA signing", "signatures", "signed/raw-sign", r.rawSignRuns},
	} {
		if len(b.runs) == 0 {
			continue
		}
		w, c := r.ratios(b.runs)
		p("  %-14s %.0f %s/s, median (%s: before the first round and after each); %.0f per CPU-second (%s)",
			b.name, median(walls(b.runs)), b.unit, list(walls(b.runs), "%.0f"), median(cpus(b.runs)), list(cpus(b.runs), "%.0f"))
		p("  %-14s %.2f, median of the rounds (%s), each round against the baseline before and after it; per CPU-second %.2f (%s)",
			b.ratio, median(w), list(w, "%.2f"), median(c), list(c, "%.2f"))
	}
	if len(r.bareRuns) > 0 {
		p("                 the bare loop: %d goroutines (domains × in-flight limit), the queue's sender, the same inboxes, no queue", r.concurrency)
	}
	if len(r.rawSignRuns) > 0 {
		p("                 raw signing: rsa.SignPKCS1v15, RSA-2048, SHA-256, %d goroutines", runtime.GOMAXPROCS(0))
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
	if m.window > 0 {
		p("  idle CPU       %.2f%% of one core over %s with nothing enqueued (%s of CPU, this process)",
			m.corePercent(m.cpu), m.window.Round(time.Millisecond), m.cpu.Round(time.Millisecond))
		if m.dbCPU > 0 {
			p("  database CPU   %.2f%% of one core (%s, this run's PostgreSQL backends); %.2f%% with this process's",
				m.corePercent(m.dbCPU), m.dbCPU.Round(time.Millisecond), m.corePercent(m.cpu+m.dbCPU))
		} else if m.dbCPUErr != nil {
			p("  database CPU   not measured: %v", m.dbCPUErr)
		}
	}
}

func (r *report) printEnqueue(p func(string, ...any)) {
	o := r.opts
	call := "EnqueueMany"
	if o.txPerBatch {
		call = "a transaction with EnqueueManyTx"
	}
	p("  setup          store %s, %s of %d activities (one explicit inbox each), %d goroutine(s); queue not started", o.store, call, o.batch, o.enqueuers)
	p("  enqueue        %d activities in %s: %.0f activities/s", r.activities, r.enqueueElapsed.Round(time.Millisecond), r.enqueueRate())
	if r.hasStatements {
		p("  statements     %d for %d batches", r.appendStatements, (r.activities+o.batch-1)/o.batch)
	}
}

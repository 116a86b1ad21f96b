package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/apqueue/apqueue/queue"
)

// orDefault is v, or def when v is zero (the queue's default applies).
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// ratio is a/b, 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// short is d to the millisecond: "856ms", "3.002s".
func short(d time.Duration) string { return d.Round(time.Millisecond).String() }

// printFaults prints the faults scenario: the settings, each domain's lag
// against its twin, the 429 pauses, the broken activity's attempts and the
// duplicates after the restart and the handover, each with its target.
func (r *report) printFaults(p func(string, ...any)) {
	o, f, s := r.opts, r.faults, r.faults.settings
	p("  setup          %d domains, %d activities at %.4g/s to every domain, store %s, inbox latency %s",
		faultDomains, r.activities, o.rate, o.store, o.inboxLatency)
	p("  queue config   MaxAttempts %d, BackoffMin %s, BackoffMax %s, BackoffJitter %g, MaxInFlightPerDomain %d, CheckpointInterval %s, LeaseTTL %s",
		orDefault(s.MaxAttempts, queue.MaxAttemptsDefault), orDefault(s.BackoffMin, queue.BackoffMinDefault), orDefault(s.BackoffMax, queue.BackoffMaxDefault),
		queue.BackoffJitterDefault, orDefault(s.MaxInFlight, queue.MaxInFlightPerDomainDefault), orDefault(s.Checkpoint, queue.CheckpointIntervalDefault),
		orDefault(s.LeaseTTL, queue.LeaseTTLDefault))
	p("  faults         %s: activity %d answered 500 forever; %s: %.0f%% of attempts answered 500 (seed %d); %s: %d× 429 with Retry-After: %d, %d in a row each time",
		f.domains[faultBroken].domain, f.brokenSeq, f.domains[faultFlaky].domain, 100*f.flakyRate, f.seed, f.domains[faultThrottled].domain, f.throttles, f.retryAfter, f.burst)
	p("  run            graceful restart at %s, lease handover at %s (the new owner held every domain %s later); %s in all%s",
		secs(f.restartAt), secs(f.handoverAt), f.handoverTook.Round(time.Millisecond), f.elapsed.Round(time.Millisecond),
		map[bool]string{true: ", TIMED OUT", false: ""}[f.timedOut])
	p("  delivered      %d of %d (the broken activity excluded), duplicates %d, retries %d, dead letters %d (inboxes: %d requests, %d answered 500/429)",
		r.delivered, r.expected, r.duplicates, r.retries, r.deadLetters, r.requests, r.failed)
	for _, reason := range r.reasons {
		p("    because      %s", reason)
	}
	if f.saturation > 0 {
		p("  saturation     %d activities enqueued at once to every domain after the paced ones, at %s", f.saturation, secs(f.saturationStart.Sub(f.began)))
	}
	p("  %-20s %-16s %9s %5s %10s %10s %10s %8s %13s", "domain", "address", "delivered", "dups", "lag p50", "p95", "max", "paced/s", "saturated/s")
	for _, d := range f.domains {
		p("  %-20s %-16s %9d %5d %10s %10s %10s %8.1f %13.1f", d.name, d.domain, d.delivered+d.saturated, d.duplicates, short(d.p50), short(d.p95), short(d.max), d.perSec, d.saturatedPerSec)
	}
	p("                 lag and paced/s: the paced activities; saturated/s: the saturation's, from their enqueue to the last of them")
	broken, twin := f.domains[faultBroken], f.domains[faultBrokenTwin]
	p("  500 forever    lag p95 %s against its twin's %s: %+.2f s (target: within 5 s)", secs(broken.p95), secs(twin.p95), (broken.p95 - twin.p95).Seconds())
	flaky, flakyTwin := f.domains[faultFlaky], f.domains[faultFlakyTwin]
	if f.saturation > 0 {
		p("  20%% 500s       throughput saturated %.1f/s against its twin's %.1f/s: %.2f (target ≥ 0.7); paced %.2f",
			flaky.saturatedPerSec, flakyTwin.saturatedPerSec, ratio(flaky.saturatedPerSec, flakyTwin.saturatedPerSec), ratio(flaky.perSec, flakyTwin.perSec))
	} else {
		p("  20%% 500s       throughput paced %.1f/s against its twin's %.1f/s: %.2f (target ≥ 0.7)", flaky.perSec, flakyTwin.perSec, ratio(flaky.perSec, flakyTwin.perSec))
	}
	pauses := make([]string, len(f.throttle.pauses))
	for i, d := range f.throttle.pauses {
		pauses[i] = short(d)
	}
	p("  429 pauses     %d× 429 (and %d to requests sent before the queue saw one), pauses from each to the next request: [%s] (target: %d s ± jitter, never earlier, never 10× later)",
		f.throttle.throttled, f.throttle.onTheWay, strings.Join(pauses, ", "), f.retryAfter)
	before := "no dead letter reported"
	if !f.deadLetterAt.IsZero() {
		before = fmt.Sprintf("%d attempts before its dead letter at %s", f.brokenAttemptsBefore(f.deadLetterAt), secs(f.deadLetterAt.Sub(f.began)))
	}
	p("  broken         activity %d: %s (target: exactly MaxAttempts = %d), %d attempts in the whole run; %d dead letter(s) stored for it (target 1)",
		f.brokenSeq, before, orDefault(s.MaxAttempts, queue.MaxAttemptsDefault), len(f.broken.brokenAttempts), f.deadLetterRows)
	p("  duplicates     %d after the graceful restart, %d after the lease handover (target 0 each); %d before the restart",
		f.dupRestart, f.dupHandover, f.dupBefore)
	p("  latency        every delivery, saturation included: enqueue to delivery p50 %s, p90 %s, p99 %s, max %s", ms(r.p50), ms(r.p90), ms(r.p99), ms(r.maxLatency))
	p("  memory         peak heap in use %s, peak Sys %s (this process: inboxes included)", mib(r.peakHeap), mib(r.peakSys))
}

package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/store"
)

// The faults scenario's domains, in inbox order: each faulty domain is
// followed by its healthy twin, which receives the same activities.
const (
	faultBroken = iota
	faultBrokenTwin
	faultFlaky
	faultFlakyTwin
	faultThrottled
	faultThrottledTwin
	faultDomains
)

// faultSaturationDefault is how many activities the faults scenario
// enqueues at once to every domain to measure throughput. A healthy twin
// drains them in 8–11 s on two cores: about three times the longest
// backoff a delivery of the 20 % 500s domain waits out (five failures in a
// row with the default seed, 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s), so that the
// ratio measures the rate the domain keeps up and not that tail alone, as
// it did with 600 once the adaptive in-flight limit drained them in about
// 2 s.
const faultSaturationDefault = 4000

var faultNames = [faultDomains]string{
	"500 forever", "  its twin", "20% 500s", "  its twin", "429 + Retry-After", "  its twin",
}

// faultsRun is what the faults scenario measured.
type faultsRun struct {
	settings  queueSettings
	brokenSeq int
	flakyRate float64
	seed      uint64
	// retryAfter is the 429s' Retry-After in seconds.
	retryAfter int
	// throttles is how many 429s the throttled domain answers, burst of
	// them in a row each time.
	throttles, burst int

	domains []faultDomainResult
	// began is the first enqueue; elapsed is from the first enqueue to the end of the run.
	began   time.Time
	elapsed time.Duration
	// restartAt and handoverAt are when the graceful restart and the
	// lease handover began, from the first enqueue; handoverTook is how
	// long it was until the new owner held every domain.
	restartAt, handoverAt, handoverTook time.Duration
	// Duplicate deliveries (same activity to the same inbox again) that
	// arrived before the restart, between it and the handover, and after.
	dupBefore, dupRestart, dupHandover int64

	throttle faultLog
	broken   faultLog
	// deadLetterAt is when the first dead letter for the broken domain was
	// reported (zero if none); deadLetterRows the store's dead letters for
	// the broken activity at the end.
	deadLetterAt   time.Time
	deadLetterRows int
	// saturation activities were enqueued at once at saturationStart,
	// after the paced ones.
	saturation      int
	saturationStart time.Time
	// timedOut: the run ended at -timeout with deliveries missing.
	timedOut bool
}

// faultDomainResult is one domain's lag and throughput.
type faultDomainResult struct {
	name, domain          string
	delivered, duplicates int64
	p50, p95, max         time.Duration
	// perSec is deliveries per second from the first enqueue to the
	// domain's last delivery (paced activities).
	perSec float64
	// saturated is how many of the saturation's activities arrived, at
	// saturatedPerSec from their enqueue to the last of them.
	saturated       int64
	saturatedPerSec float64
}

// brokenAttemptsBefore counts the broken activity's attempts that arrived
// no later than t.
func (r *faultsRun) brokenAttemptsBefore(t time.Time) int {
	n := 0
	for _, a := range r.broken.brokenAttempts {
		if !a.After(t) {
			n++
		}
	}
	return n
}

// runFaults is the faults scenario: six inboxes (a broken activity, 20 %
// random 500s, 429 with Retry-After, each next to a healthy twin) receive
// every activity enqueued at -rate for -duration; a third of the way the
// queue is stopped gracefully and a new one started on the same store, two
// thirds of the way a second queue starts and the first stops gracefully
// (a lease handover). Then -fault-saturation activities are enqueued at
// once. It waits for every delivery except the broken one and for the
// broken one's dead letter, then reports per domain.
func runFaults(ctx context.Context, o *options) (*report, error) {
	_, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	fr := &faultsRun{
		settings: settingsOf(o, keyPEM), brokenSeq: o.activities / 10, flakyRate: o.faultRate,
		seed: o.faultSeed, retryAfter: o.faultRetryAfter, throttles: o.faultThrottles, burst: o.faultBurst,
	}
	faults := make([]*inboxFault, faultDomains)
	faults[faultBroken] = newInboxFault()
	faults[faultBroken].brokenSeq = fr.brokenSeq
	faults[faultFlaky] = newInboxFault()
	faults[faultFlaky].flakyRate, faults[faultFlaky].seed = fr.flakyRate, fr.seed
	faults[faultThrottled] = newInboxFault()
	episodes := (fr.throttles + fr.burst - 1) / fr.burst
	faults[faultThrottled].throttleEvery = max(1, o.activities/(episodes+1))
	faults[faultThrottled].throttleTimes, faults[faultThrottled].throttleBurst = fr.throttles, fr.burst
	faults[faultThrottled].retryAfter = fr.retryAfter
	icfg := inboxConfig{latency: o.inboxLatency, faults: faults, perDomain: true, saturationFrom: o.activities}
	rg, err := startRig(ctx, o, faultDomains, icfg, fr.settings)
	if err != nil {
		return nil, err
	}
	defer rg.close()
	in, be, snd := rg.in, rg.be, rg.snd

	ev := &events{}
	var dlMu sync.Mutex
	brokenDomain := in.domains[faultBroken]
	obs := queue.ObserverFunc(func(ctx context.Context, e queue.Event) {
		ev.Observe(ctx, e)
		if e.Kind == queue.EventDeadLetter && e.Domain == brokenDomain {
			dlMu.Lock()
			if fr.deadLetterAt.IsZero() {
				fr.deadLetterAt = time.Now()
			}
			dlMu.Unlock()
		}
	})
	// Each queue is a process of its own: its own store (pool), owner ID.
	owners := 0
	var producerStore store.Store
	newQueue := func() (*queue.Queue, error) {
		st, err := be.newStore(ctx)
		if err != nil {
			return nil, err
		}
		if producerStore == nil {
			producerStore = st
		}
		owners++
		cfg := queueConfig(fr.settings, nil, obs)
		cfg.OwnerID = fmt.Sprintf("loadtest-faults-%d", owners)
		return queue.New(st, snd, cfg)
	}
	// The producer only enqueues, as a web process would, so that
	// enqueueing goes on while the delivering queues stop and start.
	producer, err := newQueue()
	if err != nil {
		return nil, err
	}
	running := map[*queue.Queue]bool{}
	stop := func(q *queue.Queue) error {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		delete(running, q)
		return q.Stop(stopCtx)
	}
	start := func() (*queue.Queue, error) {
		q, err := newQueue()
		if err != nil {
			return nil, err
		}
		if err := q.Start(ctx); err != nil {
			return nil, err
		}
		running[q] = true
		return q, nil
	}
	defer func() {
		for q := range running {
			_ = stop(q)
		}
	}()
	mem := startMemPeak(100 * time.Millisecond)
	defer mem.finish()
	first, err := start()
	if err != nil {
		return nil, err
	}
	if err := producer.AddDomains(ctx, in.domains...); err != nil {
		return nil, err
	}
	rep := &report{scenario: o.scenario, opts: o, activities: o.activities, faults: fr}
	if rep.leaseWait, err = waitLeased(ctx, producer, faultDomains, 1); err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	began := time.Now()
	fr.began = began
	var appends atomic.Int64
	var slowest time.Duration
	enqErr := make(chan error, 1)
	go func() {
		_, err := enqueueAll(runCtx, o, 0, enqueuer{q: producer}, in, &appends, &slowest)
		enqErr <- err
	}()
	enqueueTime := time.Duration(float64(o.activities) / o.rate * float64(time.Second))
	fr.restartAt, fr.handoverAt = enqueueTime/3, 2*enqueueTime/3

	// A graceful restart: stop the queue, then start a new one on the
	// same store, as a redeployed process would.
	if err := sleepUntil(runCtx, began.Add(fr.restartAt)); err != nil {
		return nil, fmt.Errorf("before the restart: %w", err)
	}
	fr.dupBefore = in.rec.duplicates.Load()
	if err := stop(first); err != nil {
		return nil, fmt.Errorf("graceful stop: %w", err)
	}
	second, err := start()
	if err != nil {
		return nil, err
	}
	// A lease handover: a second queue joins, the first stops gracefully,
	// and the second takes over every domain.
	if err := sleepUntil(runCtx, began.Add(fr.handoverAt)); err != nil {
		return nil, fmt.Errorf("before the handover: %w", err)
	}
	handoverStart := time.Now()
	fr.dupRestart = in.rec.duplicates.Load() - fr.dupBefore
	third, err := start()
	if err != nil {
		return nil, err
	}
	if err := waitOwners(runCtx, producerStore, 2); err != nil {
		return nil, err
	}
	if err := stop(second); err != nil {
		return nil, fmt.Errorf("graceful stop before the handover: %w", err)
	}
	if _, err := waitLeased(runCtx, third, faultDomains, 1); err != nil {
		return nil, fmt.Errorf("handover: %w", err)
	}
	fr.handoverTook = time.Since(handoverStart)

	if err := <-enqErr; err != nil {
		return nil, fmt.Errorf("enqueue: %w", err)
	}
	// Saturation: more activities at once than the domains can take, to
	// measure each one's throughput.
	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		return nil, err
	}
	defer stopProfile()
	if fr.saturation = o.faultSaturation; fr.saturation > 0 {
		so := *o
		so.rate, so.activities = 0, fr.saturation
		fr.saturationStart = time.Now()
		if _, err := enqueueAll(runCtx, &so, o.activities, enqueuer{q: producer}, in, &appends, &slowest); err != nil {
			return nil, fmt.Errorf("enqueue the saturation: %w", err)
		}
	}
	// Every delivery but the broken activity's arrives, and the broken
	// one becomes a dead letter, or the run times out.
	want := int64((o.activities+fr.saturation)*faultDomains - 1)
	dead := func() bool {
		dlMu.Lock()
		defer dlMu.Unlock()
		return !fr.deadLetterAt.IsZero()
	}
	for in.rec.unique.Load() < want || !dead() {
		if err := sleepUntil(runCtx, time.Now().Add(20*time.Millisecond)); err != nil {
			fr.timedOut = true
			break
		}
	}
	stopProfile()
	fr.elapsed = time.Since(began)
	fr.dupHandover = in.rec.duplicates.Load() - fr.dupBefore - fr.dupRestart
	rep.peakHeap, rep.peakSys = mem.finish()

	dls, err := third.DeadLetters(context.WithoutCancel(ctx), store.DeadLetterFilter{Domain: brokenDomain, Limit: 1000})
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	for _, dl := range dls {
		if seq, _, ok := parseMarks(dl.Body); ok && seq == fr.brokenSeq {
			fr.deadLetterRows++
		}
	}
	fr.throttle, fr.broken = faults[faultThrottled].log(), faults[faultBroken].log()
	for i := range faultDomains {
		lag := &in.rec.perDomain[i]
		d := faultDomainResult{
			name: faultNames[i], domain: in.domains[i],
			delivered: lag.delivered.Load(), duplicates: lag.duplicates.Load(),
			p50: lag.latency.quantile(0.5), p95: lag.latency.quantile(0.95), max: time.Duration(lag.latency.max.Load()),
		}
		if last := lag.lastNS.Load(); last > began.UnixNano() {
			d.perSec = float64(d.delivered) / time.Unix(0, last).Sub(began).Seconds()
		}
		if last := lag.saturatedLastNS.Load(); fr.saturation > 0 && last > fr.saturationStart.UnixNano() {
			d.saturated = lag.saturated.Load()
			d.saturatedPerSec = float64(d.saturated) / time.Unix(0, last).Sub(fr.saturationStart).Seconds()
		}
		fr.domains = append(fr.domains, d)
	}
	rep.expected, rep.delivered, rep.duplicates = want, in.rec.unique.Load(), in.rec.duplicates.Load()
	rep.requests, rep.failed, rep.rejected = in.rec.requests.Load(), in.rec.failed.Load(), in.rec.rejected.Load()
	rep.retries, rep.deadLetters = ev.retries.Load(), ev.deadLetters.Load()
	rep.reasons = ev.topReasons(4)
	rep.p50, rep.p90, rep.p99 = in.rec.latency.quantile(0.5), in.rec.latency.quantile(0.9), in.rec.latency.quantile(0.99)
	rep.maxLatency = time.Duration(in.rec.latency.max.Load())
	return rep, nil
}

// sleepUntil waits until t or until ctx ends, whichever is first, and
// returns ctx's error in the second case.
func sleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/queue"
)

// runDeliveries is the throughput, latency and postmortem scenarios: start
// the inboxes, measure the baselines, run the queues, enqueue, and wait until
// every delivery arrived (or the timeout).
func runDeliveries(ctx context.Context, o *options) (*report, error) {
	rep := &report{scenario: o.scenario, opts: o}
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	settings := queueSettings{MaxInFlight: o.maxInFlight, Checkpoint: o.checkpoint, BackoffMin: o.backoffMin, Sign: o.sign, KeyPEM: keyPEM, Verbose: o.verbose}
	icfg := inboxConfig{latency: o.inboxLatency, failRate: o.failRate, retryAfter: o.retryAfter}
	if o.sign {
		icfg.verify = &key.PublicKey
	}
	in, err := startInboxes(o.domains, icfg)
	if err != nil {
		return nil, err
	}
	defer in.close()
	logger := newLogger(o.verbose)
	be, err := openBackend(ctx, o, logger)
	if err != nil {
		return nil, err
	}
	defer be.close()
	snd, err := newSender(settings)
	if err != nil {
		return nil, err
	}
	defer snd.Close()

	inflight := o.maxInFlight
	if inflight == 0 {
		inflight = queue.MaxInFlightPerDomainDefault
	}
	rep.concurrency = min(o.domains, o.recipientsPerActivity()*o.activities) * inflight
	// The baselines run before and after the queue, and their means are
	// compared with it, so that a change in the machine's load during the
	// run (other processes) shows as a spread rather than a skewed ratio.
	baselines := func() {
		if !o.baseline {
			return
		}
		if o.sign {
			rep.rawSignRuns = append(rep.rawSignRuns, rawSignRate(key, o.baselineDuration))
		}
		rep.bareRuns = append(rep.bareRuns, bareLoop(ctx, in, snd, rep.concurrency, o.baselineDuration, o.bodyBytes))
	}
	baselines()

	var resolver queue.Resolver
	if o.fanout == fanoutAudience {
		resolver = sharedInboxResolver(in)
	}
	ev := &events{}
	var queues []*queue.Queue
	var children *childSet
	var producer *queue.Queue
	if o.workerMode == "exec" {
		if children, err = startChildren(ctx, o, be, settings); err != nil {
			return nil, err
		}
		defer children.stop()
		st, err := be.newStore(ctx)
		if err != nil {
			return nil, err
		}
		// The producer only enqueues, as a web process would; the children
		// deliver.
		if producer, err = queue.New(st, snd, queueConfig(settings, resolver, ev)); err != nil {
			return nil, err
		}
	} else {
		for range o.workers {
			st, err := be.newStore(ctx)
			if err != nil {
				return nil, err
			}
			q, err := queue.New(st, snd, queueConfig(settings, resolver, ev))
			if err != nil {
				return nil, err
			}
			queues = append(queues, q)
		}
		producer = queues[0]
	}
	if err := registerDomains(ctx, o, producer, in); err != nil {
		return nil, err
	}

	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		return nil, err
	}
	defer stopProfile()
	mem := startMemPeak(100 * time.Millisecond)
	for _, q := range queues {
		if err := q.Start(ctx); err != nil {
			return nil, err
		}
	}
	defer func() {
		for _, q := range queues {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			_ = q.Stop(stopCtx)
			cancel()
		}
	}()
	statements := func() int64 {
		n := be.statements()
		if children != nil {
			n += children.statements()
		}
		return n
	}
	var appends atomic.Int64
	stmtStart := statements()

	expected := int64(o.activities * o.recipientsPerActivity())
	rep.activities, rep.expected = o.activities, expected
	runCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	start := time.Now()
	enqErr := make(chan error, 1)
	go func() {
		d, err := enqueueAll(runCtx, o, producer, in, &appends)
		rep.enqueueElapsed = d
		enqErr <- err
	}()

	// Wait for every delivery; note statements between 10% and 90% of them
	// (steady state).
	var steady struct {
		stmts, appends, delivered [2]int64
		seen                      [2]bool
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var enqueueDone bool
	for in.rec.unique.Load() < expected {
		select {
		case err := <-enqErr:
			enqueueDone = true
			if err != nil {
				return nil, fmt.Errorf("enqueue: %w", err)
			}
		case <-tick.C:
		case <-runCtx.Done():
		}
		if runCtx.Err() != nil {
			break
		}
		got := in.rec.unique.Load()
		for i, frac := range []float64{0.1, 0.9} {
			if !steady.seen[i] && float64(got) >= frac*float64(expected) {
				steady.seen[i] = true
				steady.stmts[i], steady.appends[i], steady.delivered[i] = statements(), appends.Load(), got
			}
		}
	}
	if !enqueueDone {
		if err := <-enqErr; err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("enqueue: %w", err)
		}
	}
	stmtEnd := statements()
	stopProfile()
	if err := writeHeapProfile(o.memProfile); err != nil {
		return nil, err
	}
	rep.peakHeap, rep.peakSys = mem.finish()
	if rep.delivered = in.rec.unique.Load(); rep.delivered == expected {
		baselines()
	}
	if children != nil {
		h, s := children.peaks()
		rep.childPeakHeap, rep.childPeakSys = h, s
	}
	rep.duplicates = in.rec.duplicates.Load()
	rep.requests, rep.failed, rep.rejected = in.rec.requests.Load(), in.rec.failed.Load(), in.rec.rejected.Load()
	rep.retries, rep.deadLetters = ev.retries.Load(), ev.deadLetters.Load()
	if last := in.rec.lastNS.Load(); last > 0 {
		rep.elapsed = time.Unix(0, last).Sub(start)
	}
	rep.p50, rep.p90, rep.p99 = in.rec.latency.quantile(0.5), in.rec.latency.quantile(0.9), in.rec.latency.quantile(0.99)
	rep.maxLatency = time.Duration(in.rec.latency.max.Load())
	if o.store == "postgres" {
		rep.hasStatements = true
		rep.appendStatements = appends.Load()
		rep.statements = stmtEnd - stmtStart - rep.appendStatements
		if steady.seen[0] && steady.seen[1] && steady.delivered[1] > steady.delivered[0] {
			n := steady.delivered[1] - steady.delivered[0]
			rep.steadyStatements = float64(steady.stmts[1]-steady.stmts[0]-(steady.appends[1]-steady.appends[0])) / float64(n)
			rep.hasSteady = true
		}
	}
	if rep.delivered < expected {
		for dom := range o.domains {
			if m := in.rec.missing(dom, o.activities, 5); len(m) > 0 {
				rep.missingExample = fmt.Sprintf("domain %s is missing sequence numbers %v…", in.domains[dom], m)
				break
			}
		}
	}
	return rep, nil
}

// registerDomains makes the domains known before enqueueing, where the
// fan-out needs it: an audience reaches known domains, AllDomains their
// shared inboxes.
func registerDomains(ctx context.Context, o *options, q *queue.Queue, in *inboxes) error {
	switch o.fanout {
	case fanoutAudience:
		return q.AddDomains(ctx, in.domains...)
	case fanoutAll:
		for i := range in.domains {
			if err := q.SetSharedInbox(ctx, in.sharedInbox(i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// enqueueAll enqueues o.activities: one Enqueue each at o.rate, or
// EnqueueMany batches as fast as possible. It returns how long that took.
func enqueueAll(ctx context.Context, o *options, q *queue.Queue, in *inboxes, appends *atomic.Int64) (time.Duration, error) {
	all := make([]string, len(in.domains))
	for i := range in.domains {
		all[i] = in.inbox(i)
	}
	k := o.recipientsPerActivity()
	activity := func(seq int, now int64) queue.Activity {
		a := queue.Activity{Body: activityBody(seq, now, o.bodyBytes)}
		switch o.fanout {
		case fanoutAudience:
			a.Audiences = []string{followers}
		case fanoutAll:
			a.AllDomains = true
		default:
			if k == len(all) {
				a.Inboxes = all
			} else {
				a.Inboxes = make([]string, k)
				for j := range k {
					a.Inboxes[j] = all[(seq*k+j)%len(all)]
				}
			}
		}
		return a
	}
	start := time.Now()
	if o.rate > 0 {
		interval := time.Duration(float64(time.Second) / o.rate)
		for seq := range o.activities {
			if wait := time.Until(start.Add(time.Duration(seq) * interval)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return time.Since(start), ctx.Err()
				case <-t.C:
				}
			}
			if _, err := q.Enqueue(ctx, activity(seq, time.Now().UnixNano())); err != nil {
				return time.Since(start), err
			}
			appends.Add(1)
		}
		return time.Since(start), nil
	}
	for first := 0; first < o.activities; first += o.batch {
		n := min(o.batch, o.activities-first)
		batch := make([]queue.Activity, n)
		now := time.Now().UnixNano()
		for i := range batch {
			batch[i] = activity(first+i, now)
		}
		if _, err := q.EnqueueMany(ctx, batch); err != nil {
			return time.Since(start), err
		}
		appends.Add(1)
	}
	return time.Since(start), nil
}

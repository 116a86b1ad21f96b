package main

import (
	"context"
	"fmt"
	"time"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/store"
)

// runDeliveries is the throughput, latency and postmortem scenarios: start
// the inboxes and the queues, then for each of o.rounds rounds enqueue
// o.activities and wait until every delivery arrived (or the timeout), with
// the baselines measured before the first round and after each, so that
// every round is compared with the baselines measured just around it.
func runDeliveries(ctx context.Context, o *options) (*report, error) {
	rep := &report{scenario: o.scenario, opts: o}
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	settings := settingsOf(o, keyPEM)
	icfg := inboxConfig{latency: o.inboxLatency, capacity: o.inboxCapacity, failRate: o.failRate, retryAfter: o.retryAfter}
	if o.sign {
		icfg.verify = &key.PublicKey
	}
	rg, err := startRig(ctx, o, o.domains, icfg, settings)
	if err != nil {
		return nil, err
	}
	defer rg.close()
	in, be, snd := rg.in, rg.be, rg.snd

	rep.concurrency = min(o.domains, o.recipientsPerActivity()*o.activities) * o.inFlight()
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
		resolver = sharedInboxResolver(sharedInboxes(in))
	}
	ev := &events{}
	var queues []*queue.Queue
	var children *childSet
	var producer *queue.Queue
	var producerStore store.Store
	if o.workerMode == "exec" {
		if children, err = startChildren(ctx, o, be, settings, sharedInboxes(in)); err != nil {
			return nil, err
		}
		defer children.stop()
		st, err := be.newStore(ctx)
		if err != nil {
			return nil, err
		}
		producerStore = st
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
			producerStore = st
		}
		producer = queues[0]
	}

	prod := enqueuer{q: producer}
	if o.enqueueTx {
		// Any store on the run's schema binds the transaction; its commit
		// watcher numbers the activities.
		prod.st, prod.pool = be.stores[len(be.stores)-1], be.pools[len(be.pools)-1]
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
	// Enqueue once every domain is worked and the domains are split evenly
	// between the workers: the steady state of a running server. With
	// -new-domains, once every worker takes part in leasing (which a
	// placeholder domain, never addressed, makes them do).
	if o.newDomains {
		if err := producer.AddDomains(ctx, "placeholder.loadtest.example"); err != nil {
			return nil, err
		}
		if err := waitOwners(ctx, producerStore, o.workers); err != nil {
			return nil, err
		}
	} else {
		if err := registerDomains(ctx, o, producer, in); err != nil {
			return nil, err
		}
		if rep.leaseWait, err = waitLeased(ctx, producer, o.domains, o.workers); err != nil {
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
	cpu := func() time.Duration {
		d := cpuTime()
		if children != nil {
			d += children.cpu()
		}
		return d
	}
	runCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	rep.activities = o.activities
	perRound := int64(o.activities * o.recipientsPerActivity())
	for r := range o.rounds {
		if o.dbAlternate {
			be.proxy.setRTT(dbLatencyOfRound(o, r))
		}
		rd, err := deliverRound(runCtx, o, r, prod, in, statements, cpu, children != nil)
		if err != nil {
			return nil, err
		}
		rep.rounds = append(rep.rounds, rd)
		if in.rec.unique.Load() < int64(r+1)*perRound {
			break
		}
		if r == o.rounds-1 {
			stopProfile()
			if err := writeHeapProfile(o.memProfile); err != nil {
				return nil, err
			}
			rep.peakHeap, rep.peakSys = mem.finish()
		}
		baselines()
	}
	for _, q := range queues {
		if st, err := q.Stats(ctx); err == nil {
			for _, d := range st.Domains {
				if d.Local {
					rep.limits = append(rep.limits, d)
				}
			}
		}
	}
	rep.expected = perRound * int64(len(rep.rounds))
	rep.delivered = in.rec.unique.Load()
	if rep.peakHeap == 0 {
		rep.peakHeap, rep.peakSys = mem.finish()
	}
	if children != nil {
		h, s := children.peaks()
		rep.childPeakHeap, rep.childPeakSys = h, s
	}
	rep.duplicates = in.rec.duplicates.Load()
	rep.requests, rep.failed, rep.rejected = in.rec.requests.Load(), in.rec.failed.Load(), in.rec.rejected.Load()
	rep.retries, rep.deadLetters = ev.retries.Load(), ev.deadLetters.Load()
	rep.reasons = ev.topReasons(3)
	if children != nil {
		r, d := children.events()
		rep.retries += r
		rep.deadLetters += d
	}
	rep.p50, rep.p90, rep.p99 = in.rec.latency.quantile(0.5), in.rec.latency.quantile(0.9), in.rec.latency.quantile(0.99)
	rep.maxLatency = time.Duration(in.rec.latency.max.Load())
	rep.hasStatements = o.store != "memory"
	if rep.delivered < rep.expected && o.recipientsPerActivity() == o.domains { // every domain gets every activity
		for dom := range o.domains {
			if m := in.rec.missing(dom, o.activities*len(rep.rounds), 5); len(m) > 0 {
				rep.missingExample = fmt.Sprintf("domain %s is missing sequence numbers %v…", in.domains[dom], m)
				break
			}
		}
	}
	return rep, nil
}

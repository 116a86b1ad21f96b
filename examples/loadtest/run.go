package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
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
		rd, err := deliverRound(runCtx, o, r, producer, in, statements, cpu, children != nil)
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
	rep.hasStatements = o.store == "postgres"
	if rep.delivered < rep.expected {
		for dom := range o.domains {
			if m := in.rec.missing(dom, o.activities*len(rep.rounds), 5); len(m) > 0 {
				rep.missingExample = fmt.Sprintf("domain %s is missing sequence numbers %v…", in.domains[dom], m)
				break
			}
		}
	}
	return rep, nil
}

// printBehind prints the domains whose cursor is behind the head, from the
// stats of q, to diagnose a pause.
func printBehind(ctx context.Context, q *queue.Queue) {
	st, err := q.Stats(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest: stats:", err)
		return
	}
	fmt.Fprintf(os.Stderr, "loadtest: head %d\n", st.Head)
	for _, d := range st.Domains {
		if d.Cursor < st.Head {
			fmt.Fprintf(os.Stderr, "loadtest:   %s cursor %d local %v pending %d unread %d in flight %d fail %d next %s last %d %q\n",
				d.Domain, d.Cursor, d.Local, d.Pending, d.Unread, d.InFlight, d.FailCount, d.NextAttemptAt.Format(time.StampMilli), d.LastStatus, d.LastError)
		}
	}
}

// dbLatencyOfRound is the round trip the proxy adds in round r: with
// -db-latency-alternate none in the 1st, 3rd, ... rounds.
func dbLatencyOfRound(o *options, r int) time.Duration {
	if o.dbAlternate && r%2 == 0 {
		return 0
	}
	return o.dbLatency
}

// round is what one round of enqueueing and delivering measured.
type round struct {
	delivered int64
	elapsed   time.Duration // first enqueue to last delivery
	cpu       time.Duration // CPU time of this process and its workers
	// longestPause is the longest time without a new delivery before the
	// round completed (5 ms resolution).
	longestPause time.Duration
	// slowestEnqueue is the longest Enqueue or EnqueueMany call.
	slowestEnqueue time.Duration
	enqueueElapsed time.Duration
	// Statements sent during the round (appends excluded), and per delivery
	// between 10% and 90% of the round's deliveries (steady state).
	statements, appends int64
	steady              float64
	hasSteady           bool
}

func (r round) rate() rate { return newRate(r.delivered, r.elapsed, r.cpu) }

func (r round) deliveriesPerSec() float64 { return r.rate().wall }

// deliverRound enqueues round r's activities (sequence numbers r ×
// o.activities and up) and waits until the inboxes have all of them or ctx
// ends.
func deliverRound(ctx context.Context, o *options, r int, q *queue.Queue, in *inboxes, statements func() int64, cpu func() time.Duration, remote bool) (round, error) {
	var rd round
	before := in.rec.unique.Load()
	want := int64(o.activities * o.recipientsPerActivity())
	var appends atomic.Int64
	stmtStart := statements()
	start, cpuStart := time.Now(), cpu()
	enqErr := make(chan error, 1)
	go func() {
		d, err := enqueueAll(ctx, o, r*o.activities, q, in, &appends, &rd.slowestEnqueue)
		rd.enqueueElapsed = d
		enqErr <- err
	}()
	var steady struct {
		stmts, appends, delivered [2]int64
		seen                      [2]bool
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	enqueued := false
	lastCount, lastProgress := before, time.Now()
	for in.rec.unique.Load()-before < want && ctx.Err() == nil {
		select {
		case err := <-enqErr:
			enqueued = true
			if err != nil {
				return rd, fmt.Errorf("enqueue: %w", err)
			}
		case <-tick.C:
		case <-ctx.Done():
		}
		now, got := time.Now(), in.rec.unique.Load()-before
		if got+before != lastCount {
			lastCount, lastProgress = got+before, now
		} else if pause := now.Sub(lastProgress); pause > rd.longestPause {
			rd.longestPause = pause
			if o.verbose && pause >= time.Second && pause-time.Second < 10*time.Millisecond {
				fmt.Fprintf(os.Stderr, "loadtest: round %d: no delivery for 1s, %d of %d delivered\n", r+1, got, want)
				printBehind(ctx, q)
			}
		}
		for i, frac := range []float64{0.1, 0.9} {
			if !steady.seen[i] && float64(got) >= frac*float64(want) {
				steady.seen[i] = true
				steady.stmts[i], steady.appends[i], steady.delivered[i] = statements(), appends.Load(), got
			}
		}
	}
	if !enqueued {
		if err := <-enqErr; err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return rd, fmt.Errorf("enqueue: %w", err)
		}
	}
	rd.delivered = in.rec.unique.Load() - before
	if last := in.rec.lastNS.Load(); last > 0 {
		rd.elapsed = time.Unix(0, last).Sub(start)
	}
	if remote {
		time.Sleep(250 * time.Millisecond) // worker processes report every 100 ms
	}
	rd.cpu = cpu() - cpuStart
	rd.appends = appends.Load()
	rd.statements = statements() - stmtStart - rd.appends
	if steady.seen[0] && steady.seen[1] && steady.delivered[1] > steady.delivered[0] {
		n := steady.delivered[1] - steady.delivered[0]
		rd.steady = float64(steady.stmts[1]-steady.stmts[0]-(steady.appends[1]-steady.appends[0])) / float64(n)
		rd.hasSteady = true
	}
	return rd, nil
}

// registerDomains makes the domains known before enqueueing, as a server
// knows the domains of its followers (audiences reach known domains,
// AllDomains their shared inboxes).
func registerDomains(ctx context.Context, o *options, q *queue.Queue, in *inboxes) error {
	if o.fanout != fanoutAll {
		return q.AddDomains(ctx, in.domains...)
	}
	for i := range in.domains {
		if err := q.SetSharedInbox(ctx, in.sharedInbox(i)); err != nil {
			return err
		}
	}
	return nil
}

// waitOwners waits until the store counts the given number of live lease
// owners: every worker has made its first lease round.
func waitOwners(ctx context.Context, st store.Store, workers int) error {
	ctx, cancel := context.WithTimeout(ctx, queue.LeaseTTLDefault)
	defer cancel()
	for {
		ls, err := st.LeaseStats(ctx)
		if err != nil {
			return fmt.Errorf("waiting for the workers to start: %w", err)
		}
		if ls.Owners >= workers {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("only %d of %d workers take leases", ls.Owners, workers)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitLeased waits until the n known domains are all worked, split evenly
// (within one) between the workers, and returns how long that took. With
// several workers the split can take two lease rounds (LeaseTTL/3 each):
// the first worker may take every domain before the others start.
func waitLeased(ctx context.Context, q *queue.Queue, n, workers int) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 2*queue.LeaseTTLDefault)
	defer cancel()
	share := (n + workers - 1) / workers
	for {
		st, err := q.Stats(ctx)
		if err != nil {
			return 0, fmt.Errorf("waiting for the domains' leases: %w", err)
		}
		owned, byOwner := 0, map[string]int{}
		for _, d := range st.Domains {
			if d.Owner != "" {
				owned++
				byOwner[d.Owner]++
			}
		}
		balanced := len(byOwner) == min(workers, n)
		for _, c := range byOwner {
			balanced = balanced && c <= share+1
		}
		if owned >= n && balanced {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("after %s, %d of %d domains are leased, split %v", time.Since(start).Round(time.Second), owned, n, byOwner)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// enqueueAll enqueues o.activities: one Enqueue each at o.rate, or
// EnqueueMany batches as fast as possible. It returns how long that took.
func enqueueAll(ctx context.Context, o *options, firstSeq int, q *queue.Queue, in *inboxes, appends *atomic.Int64, slowest *time.Duration) (time.Duration, error) {
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
		for i := range o.activities {
			seq := firstSeq + i
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return time.Since(start), ctx.Err()
				case <-t.C:
				}
			}
			callStart := time.Now()
			if _, err := q.Enqueue(ctx, activity(seq, callStart.UnixNano())); err != nil {
				return time.Since(start), err
			}
			appends.Add(1)
			*slowest = max(*slowest, time.Since(callStart))
		}
		return time.Since(start), nil
	}
	for first := 0; first < o.activities; first += o.batch {
		n := min(o.batch, o.activities-first)
		batch := make([]queue.Activity, n)
		now := time.Now().UnixNano()
		for i := range batch {
			batch[i] = activity(firstSeq+first+i, now)
		}
		callStart := time.Now()
		if _, err := q.EnqueueMany(ctx, batch); err != nil {
			return time.Since(start), err
		}
		appends.Add(1)
		*slowest = max(*slowest, time.Since(callStart))
	}
	return time.Since(start), nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/internal/fakedns"
	"github.com/apqueue/apqueue/queue"
)

// instanceCase is one queue, with a number of known domains, delivering one
// workload: what was set up and what it measured.
type instanceCase struct {
	known int
	work  *workload

	register, leaseWait time.Duration
	elapsed, cpu        time.Duration // first enqueue to last delivery
	enqueue             time.Duration // first enqueue to the last EnqueueMany's return
	delivered, dups     int64
	// incomplete says the deliveries did not all arrive within -timeout.
	incomplete    error
	retries, dead int64
	resolverCalls int64
	reasons       []string
	// slotWaits counts the sends that waited for one of -max-conns slots.
	slotWaits int64
	// Peaks of the heap in use and of the live heap.
	peakHeap, peakLive uint64
	// dbCPU is the database backends' CPU time (PostgreSQL on this
	// machine), dbCPUErr why it was not measured.
	dbCPU    time.Duration
	dbCPUErr error
}

// cpuPerThousand is the CPU-seconds this process spent per 1,000 deliveries.
func (c *instanceCase) cpuPerThousand() float64 { return c.perThousand(c.cpu) }

// totalPerThousand adds the database's CPU (0 when not measured).
func (c *instanceCase) totalPerThousand() float64 { return c.perThousand(c.cpu + c.dbCPU) }

func (c *instanceCase) perThousand(d time.Duration) float64 {
	if c.delivered == 0 {
		return 0
	}
	return d.Seconds() * 1000 / float64(c.delivered)
}

func (c *instanceCase) deliveriesPerSec() float64 {
	if c.elapsed <= 0 {
		return 0
	}
	return float64(c.delivered) / c.elapsed.Seconds()
}

// instanceReport is what the instance scenario measured: the realistic mix
// with -known-domains, and a workload confined to the -compare-domains most
// followed domains run with both numbers of known domains.
type instanceReport struct {
	fileLimit uint64
	cases     []*instanceCase
}

// cpuRatio is CPU per delivery with many known domains over that with few,
// on the same deliveries (the last two cases), 0 without a comparison:
// this process's CPU, and with the database's added.
func (r *instanceReport) cpuRatio() (process, total float64) {
	if len(r.cases) < 3 || r.cases[2].cpuPerThousand() == 0 {
		return 0, 0
	}
	many, few := r.cases[1], r.cases[2]
	process = many.cpuPerThousand() / few.cpuPerThousand()
	if many.dbCPU > 0 && few.dbCPU > 0 {
		total = many.totalPerThousand() / few.totalPerThousand()
	}
	return process, total
}

// runInstance is the instance scenario: a server that knows -known-domains
// remote domains (registered at start with their shared inboxes), served by
// -inbox-servers loopback servers through a DNS server that answers every
// name with 127.0.0.1. It delivers the realistic mix (see workload), then,
// unless -compare-domains is 0, a mix confined to the compare-domains most
// followed domains twice: with -known-domains known and with only those
// known, each case with a fresh store and queue.
func runInstance(ctx context.Context, o *options) (*report, error) {
	ir := &instanceReport{}
	dns, limit, err := startFakeDNS(o.maxConns)
	ir.fileLimit = limit
	if err != nil {
		return nil, err
	}
	defer dns.Close()
	shape := workloadShape{domains: o.knownDomains, allDomains: o.knownDomains, audiences: o.audiences, activities: o.activities,
		bigEvery: o.bigEvery, allEvery: o.allEvery, bigSize: 2000, seed: o.seed}
	mix, err := newWorkload("mix", shape)
	if err != nil {
		return nil, err
	}
	ir.cases = append(ir.cases, &instanceCase{known: o.knownDomains, work: mix})
	if o.compareDomains > 0 {
		shape.domains, shape.bigEvery, shape.allEvery = o.compareDomains, 0, 0
		head, err := newWorkload(fmt.Sprintf("the %d most followed domains", o.compareDomains), shape)
		if err != nil {
			return nil, err
		}
		ir.cases = append(ir.cases, &instanceCase{known: o.knownDomains, work: head}, &instanceCase{known: o.compareDomains, work: head})
	}
	for _, c := range ir.cases {
		if err := runInstanceCase(ctx, o, dns, c); err != nil {
			return nil, fmt.Errorf("%d known domains, %s: %w", c.known, c.work.name, err)
		}
	}
	rep := &report{scenario: o.scenario, opts: o, instance: ir}
	for _, c := range ir.cases {
		rep.expected += c.work.deliveries
		rep.delivered += c.delivered
	}
	return rep, nil
}

// runInstanceCase registers c.known domains, starts a queue, waits for every
// domain's lease, enqueues c's workload in batches and waits for its
// deliveries.
func runInstanceCase(ctx context.Context, o *options, dns *fakedns.Server, c *instanceCase) error {
	in, err := startVirtualInboxes(c.known, o.inboxServers, inboxConfig{})
	if err != nil {
		return err
	}
	defer in.close()
	be, st, err := openStore(ctx, o)
	if err != nil {
		return err
	}
	defer be.close()
	settings := o.queueSettings()
	h, snd, err := newVirtualSender(settings, dns, o.maxConns)
	if err != nil {
		return err
	}
	defer h.Close()
	res := newFollowerResolver(in, c.work)
	ev := &events{}
	q, err := queue.New(st, snd, queueConfig(settings, res, ev))
	if err != nil {
		return err
	}
	if c.register, err = registerKnown(ctx, q, in); err != nil {
		return err
	}
	if err := q.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = stopQueue(ctx, q) }()
	if c.leaseWait, err = waitLeased(ctx, q, c.known, 1); err != nil {
		return err
	}
	runCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	var db *dbCPU
	if o.store == "postgres" {
		db, c.dbCPUErr = startDBCPU(ctx, be)
	}
	runtime.GC() // the previous case's garbage is not this one's heap
	mem := startMemPeak(100 * time.Millisecond)
	calls0 := res.calls.Load()
	start, cpu0 := time.Now(), cpuTime()
	enqErr := make(chan error, 1)
	var took atomic.Int64 // the enqueueing's duration once it is done
	go func() {
		err := enqueueWorkload(runCtx, q, in, c.work, o.batch, o.bodyBytes)
		took.Store(int64(time.Since(start)))
		enqErr <- err
	}()
	err = waitDeliveries(runCtx, in, c.work.deliveries, enqErr)
	if errors.Is(err, context.DeadlineExceeded) {
		c.incomplete, err = err, nil // reported, with what did arrive
	}
	c.cpu = cpuTime() - cpu0
	c.enqueue = time.Duration(took.Load())
	c.peakHeap, _ = mem.finish()
	c.peakLive = mem.peakLive()
	if db != nil {
		c.dbCPU, c.dbCPUErr = db.since(ctx)
	}
	c.resolverCalls = res.calls.Load() - calls0
	c.delivered, c.dups = in.rec.unique.Load(), in.rec.duplicates.Load()
	if last := in.rec.lastNS.Load(); last > 0 {
		c.elapsed = time.Unix(0, last).Sub(start)
	}
	c.retries, c.dead, c.reasons = ev.retries.Load(), ev.deadLetters.Load(), ev.topReasons(3)
	c.slotWaits = snd.waits.Load()
	return err
}

// enqueueWorkload enqueues w's activities, sequence numbers from 0, in
// EnqueueMany batches of batch.
func enqueueWorkload(ctx context.Context, q *queue.Queue, in *inboxes, w *workload, batch, bodyBytes int) error {
	for first := 0; first < len(w.acts); first += batch {
		acts := make([]queue.Activity, 0, batch)
		now := time.Now().UnixNano()
		for seq := first; seq < min(first+batch, len(w.acts)); seq++ {
			acts = append(acts, w.activity(in, seq, now, bodyBytes))
		}
		if _, err := q.EnqueueMany(ctx, acts); err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
	}
	return nil
}

// activity is activity seq of w, as the queue is given it.
func (w *workload) activity(in *inboxes, seq int, enqueuedNS int64, bodyBytes int) queue.Activity {
	p := w.acts[seq]
	a := queue.Activity{Body: activityBody(seq, enqueuedNS, bodyBytes), AllDomains: p.all}
	if p.audience >= 0 {
		a.Audiences = []string{audienceKey(p.audience)}
	}
	for _, d := range p.inboxes {
		a.Inboxes = append(a.Inboxes, in.inbox(d))
	}
	return a
}

// waitDeliveries waits until the inboxes have want unique deliveries, the
// enqueuer failed, or ctx ends (an error naming what is missing).
func waitDeliveries(ctx context.Context, in *inboxes, want int64, enqErr <-chan error) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for in.rec.unique.Load() < want {
		select {
		case err := <-enqErr:
			if err != nil {
				return err
			}
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d deliveries arrived: %w", in.rec.unique.Load(), want, ctx.Err())
		}
	}
	return nil
}

func (r *instanceReport) print(p func(string, ...any), o *options) {
	p("  setup          store %s, %d inbox servers on loopback behind a fake DNS, %d audiences, batches of %d, %d-byte bodies, open-file limit %d",
		o.store, o.inboxServers, o.audiences, o.batch, o.bodyBytes, r.fileLimit)
	for _, c := range r.cases {
		w := c.work
		p("  %d known, %s: %d activities, %d deliveries (%.1f domains an activity)", c.known, w.name, len(w.acts), w.deliveries, float64(w.deliveries)/float64(len(w.acts)))
		p("    register     %d domains with their shared inboxes in one batch: %s; every domain leased %s later", c.known, c.register.Round(time.Millisecond), c.leaseWait.Round(time.Millisecond))
		p("    delivered    %d of %d, duplicates %d, retries %d, dead letters %d; %d sends waited for one of %d connection slots",
			c.delivered, w.deliveries, c.dups, c.retries, c.dead, c.slotWaits, o.maxConns)
		for _, reason := range c.reasons {
			p("      because    %s", reason)
		}
		if c.incomplete != nil {
			p("    INCOMPLETE   %v", c.incomplete)
		}
		p("    throughput   %.0f deliveries/s (first enqueue to last delivery: %s; enqueueing took %s)", c.deliveriesPerSec(), c.elapsed.Round(time.Millisecond), c.enqueue.Round(time.Millisecond))
		p("    CPU          %.3f CPU-seconds per 1,000 deliveries (%.2f s in all, this process: queue, store client, inboxes)", c.cpuPerThousand(), c.cpu.Seconds())
		if c.dbCPU > 0 {
			p("    database CPU %.3f CPU-seconds per 1,000 deliveries (%.2f s in all, this run's PostgreSQL backends); %.3f with this process's", c.perThousand(c.dbCPU), c.dbCPU.Seconds(), c.totalPerThousand())
		} else if c.dbCPUErr != nil {
			p("    database CPU not measured: %v", c.dbCPUErr)
		}
		p("    resolver     %.2f calls an activity (%d); bound: audiences + addressed domains = %.2f an activity",
			float64(c.resolverCalls)/float64(len(w.acts)), c.resolverCalls, float64(w.boundCalls)/float64(len(w.acts)))
		p("    heap         peak %s in use, peak live heap %s (this process: inboxes and workload included)", mib(c.peakHeap), mib(c.peakLive))
	}
	if process, total := r.cpuRatio(); process > 0 {
		p("  CPU ratio      %.2f: CPU per delivery with %d known domains over %d known, same deliveries (target ≤ 1.25)", process, r.cases[1].known, r.cases[2].known)
		if total > 0 {
			p("                 %.2f with the database's CPU added", total)
		}
	}
}

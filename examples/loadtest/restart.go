package main

import (
	"context"
	"time"

	"github.com/apqueue/apqueue/queue"
)

// restartReport is what the restart scenario measured.
type restartReport struct {
	domains, activities int
	deliveries          int64
	reads               rowReads
	windowBytes         int
	// Heap in use after a GC before the new queue started, and the peaks
	// while it drained: of heap in use, and of the live heap.
	heapBefore, peakHeap, peakLive uint64
	elapsed                        time.Duration
	delivered, retries, dead       int64
	incomplete                     error
}

// perDomainBound is the restart target's heap allowance per domain.
const perDomainBound = 20 << 10

// runRestart is the restart scenario: o.domains domains, registered with
// their shared inboxes and worked once by a queue that then stops; a backlog
// of o.activities activities, each to o.recipients domains in turn (personal
// inboxes), enqueued while no queue runs, so that every domain is behind;
// then a new queue, reading the log through a store that counts the rows it
// returns, drains it. The domains share -inbox-servers servers through a
// fake DNS, as in the instance scenario.
func runRestart(ctx context.Context, o *options) (*report, error) {
	dns, _, err := startFakeDNS(o.maxConns)
	if err != nil {
		return nil, err
	}
	defer dns.Close()
	in, err := startInboxProcess(ctx, o.domains, o.inboxServers)
	if err != nil {
		return nil, err
	}
	defer in.close()
	be, st, err := openStore(ctx, o)
	if err != nil {
		return nil, err
	}
	defer be.close()
	settings := o.queueSettings()
	h, snd, err := newVirtualSender(settings, dns, o.maxConns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	rr := &restartReport{domains: o.domains, activities: o.activities, windowBytes: o.windowBytes}
	if rr.windowBytes == 0 {
		rr.windowBytes = queue.WindowBytesDefault
	}
	// The process before the restart: it works every domain, then stops.
	before, err := queue.New(st, snd, queueConfig(settings, nil, nil))
	if err != nil {
		return nil, err
	}
	if _, err := registerKnown(ctx, before, in); err != nil {
		return nil, err
	}
	if err := before.Start(ctx); err != nil {
		return nil, err
	}
	_, err = waitLeased(ctx, before, o.domains, 1)
	if stopErr := stopQueue(ctx, before); err == nil {
		err = stopErr
	}
	if err != nil {
		return nil, err
	}
	// While it is down, the backlog.
	k := o.recipientsPerActivity()
	ids := make([]int64, 0, o.activities)
	now := time.Now().UnixNano()
	for first := 0; first < o.activities; first += o.batch {
		acts := make([]queue.Activity, 0, o.batch)
		for seq := first; seq < min(first+o.batch, o.activities); seq++ {
			a := queue.Activity{Body: activityBody(seq, now, o.bodyBytes)}
			for j := range k {
				a.Inboxes = append(a.Inboxes, in.inbox((seq*k+j)%o.domains))
			}
			acts = append(acts, a)
		}
		got, err := before.EnqueueMany(ctx, acts)
		if err != nil {
			return nil, err
		}
		ids = append(ids, got...)
	}
	rr.deliveries = int64(o.activities * k)
	// The new process, through the counting store.
	counting := newCountingStore(st, ids[0], int(ids[len(ids)-1]-ids[0]+1))
	ev := &events{}
	after, err := queue.New(counting, snd, queueConfig(settings, nil, ev))
	if err != nil {
		return nil, err
	}
	rr.heapBefore, _ = gcMemory()
	mem := startMemPeak(20 * time.Millisecond)
	runCtx, cancelRun := context.WithTimeout(ctx, o.timeout)
	defer cancelRun()
	start := time.Now()
	if err := after.Start(ctx); err != nil {
		return nil, err
	}
	defer func() { _ = stopQueue(ctx, after) }()
	profiled := make(chan error, 1)
	go func() { profiled <- profileAtHalf(runCtx, in, rr.deliveries, o.memProfile) }()
	if err := waitDeliveries(runCtx, in, rr.deliveries, nil); err != nil {
		rr.incomplete = err
	}
	if err := <-profiled; err != nil && rr.incomplete == nil {
		return nil, err
	}
	rr.peakHeap, _ = mem.finish()
	rr.peakLive = mem.peakLive()
	rr.delivered = in.rec.unique.Load()
	if last := in.rec.lastNS.Load(); last > 0 {
		rr.elapsed = time.Unix(0, last).Sub(start)
	}
	rr.reads = counting.summary()
	rr.retries, rr.dead = ev.retries.Load(), ev.deadLetters.Load()
	return &report{scenario: o.scenario, opts: o, restart: rr, expected: rr.deliveries, delivered: rr.delivered, duplicates: in.rec.duplicates.Load()}, nil
}

// heapBound is WindowBytes plus 20 KiB per domain.
func (r *restartReport) heapBound() uint64 {
	return uint64(r.windowBytes) + uint64(r.domains)*perDomainBound
}

func (r *restartReport) print(p func(string, ...any), o *options) {
	p("  setup          store %s, %d domains behind after a restart, a backlog of %d activities (%d domains each, %d-byte bodies), WindowBytes %s",
		o.store, r.domains, r.activities, o.recipientsPerActivity(), o.bodyBytes, mib(uint64(r.windowBytes)))
	p("  delivered      %d of %d in %s (%.0f deliveries/s), retries %d, dead letters %d", r.delivered, r.deliveries, r.elapsed.Round(time.Millisecond),
		float64(r.delivered)/max(r.elapsed.Seconds(), 1e-9), r.retries, r.dead)
	if r.incomplete != nil {
		p("  INCOMPLETE     %v", r.incomplete)
	}
	rd := r.reads
	p("  log reads      each row read at most %d times, %.2f on average (target ≤ 2); %d of %d rows read more than twice, %d never; %d Activities calls",
		rd.maxReads, float64(rd.total)/float64(max(rd.rows, 1)), rd.overTwice, rd.rows, rd.never, rd.calls)
	growth := uint64(max(int64(r.peakLive)-int64(r.heapBefore), 0))
	verdict := "within"
	if growth > r.heapBound() {
		verdict = "OVER"
	}
	p("  heap           %s in use before the start; while draining, peak live heap %s (+%s), peak in use %s; growth %s the bound WindowBytes + 20 KiB a domain = %s",
		mib(r.heapBefore), mib(r.peakLive), mib(growth), mib(r.peakHeap), verdict, mib(r.heapBound()))
	p("                 the inboxes run in another process: the growth includes the client ends of the connections (up to -max-conns %d, bufio buffers of 4 KiB a direction) and, with the memory store, its copies of the rows it returns; -memprofile shows the split", o.maxConns)
}

// profileAtHalf writes the heap profile to path ("" for none) once half of
// want deliveries have arrived: the drain's memory, not what is left after.
func profileAtHalf(ctx context.Context, in *inboxes, want int64, path string) error {
	if path == "" {
		return nil
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for in.rec.unique.Load() < want/2 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil
		}
	}
	return writeHeapProfile(path)
}

package main

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

// idleMemory is what o.domains idle domains cost one process.
type idleMemory struct {
	domains int
	// Heap in use (after a GC) at the start of the run, once the domains
	// are in the store, and once the queue works all of them.
	heapStart, heapStored, heapRunning uint64
	// Goroutine stacks in use before the queue started and once it works
	// every domain.
	stackBefore, stackRunning uint64
	goroutines                int
	leaseWait                 time.Duration
	// cpu is the CPU time this process used over window, once every lease
	// was taken and the start-up settled, with nothing enqueued.
	cpu, window time.Duration
	// dbCPU is the database backends' CPU over the same window (PostgreSQL
	// on this machine), dbCPUErr why it was not measured.
	dbCPU    time.Duration
	dbCPUErr error
}

// corePercent is CPU time d over the idle window, in percent of one core.
func (m *idleMemory) corePercent(d time.Duration) float64 {
	if m.window <= 0 {
		return 0
	}
	return 100 * d.Seconds() / m.window.Seconds()
}

// runIdle registers o.domains domains with nothing to deliver, starts one
// queue, waits until it holds every domain's lease (a worker per domain),
// measures heap and stacks after a GC, then the CPU the process uses over
// o.idleWindow with nothing enqueued (lease renewals, checkpoints, polls),
// which -cpuprofile profiles.
func runIdle(ctx context.Context, o *options) (*report, error) {
	m := &idleMemory{domains: o.domains}
	m.heapStart, _ = gcMemory()
	sa, err := openStandalone(ctx, o, 0) // nothing to deliver
	if err != nil {
		return nil, err
	}
	defer sa.close()
	q := sa.q
	names := make([]string, 0, 1000)
	for i := range o.domains {
		names = append(names, fmt.Sprintf("idle-%05d.example", i))
		if len(names) == cap(names) || i == o.domains-1 {
			if err := q.AddDomains(ctx, names...); err != nil {
				return nil, err
			}
			names = names[:0]
		}
	}
	m.heapStored, m.stackBefore = gcMemory()
	start := time.Now()
	if err := q.Start(ctx); err != nil {
		return nil, err
	}
	defer func() { _ = stopQueue(ctx, q) }()
	waitCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	for {
		stats, err := q.Stats(waitCtx)
		if err != nil {
			return nil, fmt.Errorf("waiting for every domain's lease: %w", err)
		}
		local := 0
		for _, d := range stats.Domains {
			if d.Local {
				local++
			}
		}
		if local == o.domains {
			break
		}
		select {
		case <-waitCtx.Done():
			return nil, fmt.Errorf("the queue works %d of %d domains after %s", local, o.domains, o.timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
	m.leaseWait = time.Since(start)
	time.Sleep(time.Second) // let start-up reads and the first checkpoint finish
	m.heapRunning, m.stackRunning = gcMemory()
	m.goroutines = runtime.NumGoroutine()
	if o.idleWindow > 0 {
		var db *dbCPU
		if o.store == "postgres" {
			db, m.dbCPUErr = startDBCPU(ctx, sa.be)
		}
		// -cpuprofile covers the idle window only: start-up (registering
		// and leasing every domain) would hide what idleness costs.
		stopProfile, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return nil, err
		}
		start, cpu := time.Now(), cpuTime()
		select {
		case <-time.After(o.idleWindow):
		case <-ctx.Done():
			stopProfile()
			return nil, ctx.Err()
		}
		m.cpu, m.window = cpuTime()-cpu, time.Since(start)
		stopProfile()
		if db != nil {
			m.dbCPU, m.dbCPUErr = db.since(ctx)
		}
	}
	return &report{scenario: o.scenario, opts: o, idle: m}, nil
}

// gcMemory collects garbage twice and returns the heap and stack in use.
func gcMemory() (heapInuse, stackInuse uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse
}

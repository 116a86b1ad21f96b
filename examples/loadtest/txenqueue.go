package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/store/postgres"
)

// contrast is the result of a scenario that compares two ways of doing one
// thing, measured alternately for -baseline-duration each, -rounds times,
// in one run: the rates of each round and the median ratio.
type contrast struct {
	setup      string
	what, base string // the measured variant and its baseline
	unit       string
	rates      [][2]float64 // per round: variant, baseline
	// An optional reference measured in each round after the other two
	// (refRates[i] in round i): what the variant is bounded by.
	ref      string
	refRates []float64
	// The CPU time per call of each round's phases (variant, baseline,
	// reference), on the whole machine and in this process; no machine
	// figures where /proc/stat cannot be read.
	machineCPU, processCPU [3][]time.Duration
	note                   string
}

// phase is what one phase of a contrast measured: calls per second, and
// the CPU time per call on the whole machine (0 where it cannot be read)
// and in this process.
type phase struct {
	rate                   float64
	machineCPU, processCPU time.Duration
}

// add keeps p's CPU figures as those of phase i (0 variant, 1 baseline,
// 2 reference).
func (c *contrast) add(i int, p phase) {
	if p.machineCPU > 0 {
		c.machineCPU[i] = append(c.machineCPU[i], p.machineCPU)
	}
	c.processCPU[i] = append(c.processCPU[i], p.processCPU)
}

// refRatio is the median over the rounds of reference / baseline.
func (c *contrast) refRatio() float64 {
	var rs []float64
	for i, r := range c.rates {
		if i < len(c.refRates) && r[1] > 0 {
			rs = append(rs, c.refRates[i]/r[1])
		}
	}
	return median(rs)
}

// ratio is the median over the rounds of variant / baseline.
func (c *contrast) ratio() float64 {
	var rs []float64
	for _, r := range c.rates {
		if r[1] > 0 {
			rs = append(rs, r[0]/r[1])
		}
	}
	return median(rs)
}

// runTxEnqueue measures what EnqueueTx adds to a caller's transaction:
// o.enqueuers callers, each on its own pool connection, run BEGIN; INSERT
// of a row of their own; EnqueueTx; COMMIT, and, alternately, the same
// transaction without EnqueueTx, on the same pool (through the latency
// proxy with -db-latency). The store numbers the committed activities as it
// does in production (its commit watcher, on the same pool); the run checks
// at the end that every committed activity was.
//
// Each round also measures a reference: the same transaction with, in
// EnqueueTx's place, a plain INSERT of the same body into a table with
// nothing but a serial key. No EnqueueTx that writes the body in the
// caller's transaction can do better than it on this machine, so the
// report shows how much of the gap is the statement's place in the
// transaction and how much is the store's own work.
func runTxEnqueue(ctx context.Context, o *options) (*report, error) {
	sa, err := openStandalone(ctx, o, max(o.dbConns, o.enqueuers)) // the queue is not started
	if err != nil {
		return nil, err
	}
	defer sa.close()
	be, q := sa.be, sa.q
	pst := sa.st.(*postgres.Store)
	pool := be.pools[0]
	table := pgx.Identifier{be.schema, "posts"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+table+" (id bigserial PRIMARY KEY, body text NOT NULL)"); err != nil {
		return nil, err
	}
	plain := pgx.Identifier{be.schema, "plain_bodies"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+plain+" (id bigserial PRIMARY KEY, body bytea NOT NULL)"); err != nil {
		return nil, err
	}
	inbox := []string{"https://enqueue.example/inbox"}
	var enqueued atomic.Int64
	txn := func(enqueue bool) func(ctx context.Context, n int) error {
		return func(ctx context.Context, n int) error {
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "INSERT INTO "+table+" (body) VALUES ($1)", fmt.Sprint("post ", n)); err != nil {
					return err
				}
				if enqueue {
					return q.EnqueueTx(ctx, pst.Tx(tx), queue.Activity{Body: activityBody(n, 0, o.bodyBytes), Inboxes: inbox})
				}
				return nil
			})
			if err == nil && enqueue {
				enqueued.Add(1)
			}
			return err
		}
	}

	c := &contrast{
		setup: fmt.Sprintf("store postgres, %d callers on a pool of %d, added round trip %v, %d-byte bodies",
			o.enqueuers, be.conns, o.dbLatency, o.bodyBytes),
		what: "BEGIN; INSERT; EnqueueTx; COMMIT", base: "BEGIN; INSERT; COMMIT", unit: "commits/s",
	}
	// The reference: a plain INSERT of the body where EnqueueTx was.
	reference := func(ctx context.Context, n int) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO "+table+" (body) VALUES ($1)", fmt.Sprint("post ", n)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+plain+" (body) VALUES ($1)", activityBody(n, 0, o.bodyBytes))
			return err
		})
	}
	c.ref = "BEGIN; INSERT; INSERT of the body into a plain table; COMMIT"
	stmtStart := be.statements()
	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		return nil, err
	}
	err = measureContrast(ctx, o, c, txn(true), txn(false), reference)
	stopProfile()
	if err != nil {
		return nil, err
	}
	storeStatements := be.statements() - stmtStart
	// Every committed activity is numbered soon after its commit.
	var head int64
	for deadline := time.Now().Add(10 * time.Second); head < enqueued.Load() && time.Now().Before(deadline); {
		if head, err = pst.Head(ctx); err != nil {
			return nil, err
		}
		time.Sleep(5 * time.Millisecond) // polling the head, as a queue does
	}
	c.note = fmt.Sprintf("%d activities enqueued in committed transactions, head %d after the run; "+
		"%.2f store statements per activity (EnqueueTx's, and the commit watcher's outside the transactions)",
		enqueued.Load(), head, float64(storeStatements)/float64(max(1, enqueued.Load())))
	if head != enqueued.Load() {
		return nil, fmt.Errorf("%d activities enqueued but the head is %d", enqueued.Load(), head)
	}
	return &report{scenario: o.scenario, opts: o, contrast: c}, nil
}

// runAppendScaling measures single-activity Enqueue (one Append each) with
// o.enqueuers concurrent callers against one caller, alternately, on one
// store.
func runAppendScaling(ctx context.Context, o *options) (*report, error) {
	sa, err := openStandalone(ctx, o, max(o.dbConns, o.enqueuers)) // the queue is not started
	if err != nil {
		return nil, err
	}
	defer sa.close()
	q := sa.q
	inbox := []string{"https://enqueue.example/inbox"}
	enqueue := func(ctx context.Context, n int) error {
		_, err := q.Enqueue(ctx, queue.Activity{Body: activityBody(n, 0, o.bodyBytes), Inboxes: inbox, IdempotencyKey: idempotencyKey(o, n)})
		return err
	}
	keys := ""
	if o.idempotencyKeys {
		keys = ", a unique idempotency key each"
	}
	c := &contrast{
		setup: fmt.Sprintf("store %s, one Enqueue (one activity%s) per call, %d callers vs 1; queue not started", o.store, keys, o.enqueuers),
		what:  fmt.Sprintf("%d callers", o.enqueuers), base: "1 caller", unit: "activities/s",
	}
	serial := *o
	serial.enqueuers = 1
	for range o.rounds {
		base, err := rateFor(ctx, &serial, enqueue)
		if err != nil {
			return nil, err
		}
		variant, err := rateFor(ctx, o, enqueue)
		if err != nil {
			return nil, err
		}
		c.rates = append(c.rates, [2]float64{variant.rate, base.rate})
		c.add(0, variant)
		c.add(1, base)
	}
	return &report{scenario: o.scenario, opts: o, contrast: c}, nil
}

// measureContrast runs baseline, variant and, when given, reference
// (c.ref) in turn, o.rounds times, each with o.enqueuers callers for
// o.baselineDuration.
func measureContrast(ctx context.Context, o *options, c *contrast, variant, baseline, reference func(context.Context, int) error) error {
	for range o.rounds {
		base, err := rateFor(ctx, o, baseline)
		if err != nil {
			return err
		}
		v, err := rateFor(ctx, o, variant)
		if err != nil {
			return err
		}
		c.rates = append(c.rates, [2]float64{v.rate, base.rate})
		c.add(0, v)
		c.add(1, base)
		if reference != nil {
			ref, err := rateFor(ctx, o, reference)
			if err != nil {
				return err
			}
			c.refRates = append(c.refRates, ref.rate)
			c.add(2, ref)
		}
	}
	return nil
}

// rateFor calls f from o.enqueuers goroutines for o.baselineDuration and
// returns the calls completed per second and what they cost in CPU.
func rateFor(ctx context.Context, o *options, f func(context.Context, int) error) (phase, error) {
	runCtx, cancel := context.WithTimeout(ctx, o.baselineDuration)
	defer cancel()
	var (
		done  atomic.Int64
		next  atomic.Int64
		wg    sync.WaitGroup
		first error
		mu    sync.Mutex
	)
	start, process := time.Now(), cpuTime()
	machine, machineOK := machineCPU()
	for range o.enqueuers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				// The call runs to its end with the outer context, so that a
				// transaction is never cut off mid-way by the timer.
				if err := f(ctx, int(next.Add(1))); err != nil {
					mu.Lock()
					first = errors.Join(first, err)
					mu.Unlock()
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return phase{}, first
	}
	calls := max(1, done.Load())
	p := phase{rate: float64(done.Load()) / time.Since(start).Seconds(), processCPU: (cpuTime() - process) / time.Duration(calls)}
	if now, ok := machineCPU(); ok && machineOK {
		p.machineCPU = (now - machine) / time.Duration(calls)
	}
	return p, nil
}

// printContrast prints a contrast scenario's rounds and ratio.
func (r *report) printContrast(p func(string, ...any)) {
	c := r.contrast
	p("  setup          %s", c.setup)
	for i, rt := range c.rates {
		p("  round %d        %s %.0f %s, %s %.0f %s: ratio %.2f", i+1, c.what, rt[0], c.unit, c.base, rt[1], c.unit, rt[0]/rt[1])
		if i < len(c.refRates) {
			p("                 reference: %s %.0f %s: ratio %.2f", c.ref, c.refRates[i], c.unit, c.refRates[i]/rt[1])
		}
	}
	p("  ratio          %s / %s = %.2f (median of %d rounds)", c.what, c.base, c.ratio(), len(c.rates))
	if len(c.refRates) > 0 {
		p("  reference      %s / %s = %.2f (median): the bound for a statement that writes the body in the caller's transaction", c.ref, c.base, c.refRatio())
	}
	if len(c.machineCPU[0]) > 0 {
		names := "the first / the second"
		if len(c.refRates) > 0 {
			names += " / the reference"
		}
		p("  CPU per call   %s: whole machine (the database included when it runs here) %s µs; this process %s µs (medians)",
			names, cpuPerCall(c.machineCPU), cpuPerCall(c.processCPU))
	}
	if c.note != "" {
		p("  check          %s", c.note)
	}
}

// cpuPerCall prints the median CPU time per call of each phase measured,
// in microseconds.
func cpuPerCall(cpu [3][]time.Duration) string {
	var parts []string
	for _, ds := range cpu {
		if len(ds) == 0 {
			continue
		}
		xs := make([]float64, len(ds))
		for j, d := range ds {
			xs[j] = float64(d) / float64(time.Microsecond)
		}
		parts = append(parts, fmt.Sprintf("%.0f", median(xs)))
	}
	return strings.Join(parts, " / ")
}

package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/queue"
)

// runEnqueueRate measures batch enqueueing alone: o.enqueuers goroutines
// call EnqueueMany with o.batch activities each (addressed to one explicit
// inbox), or with -tx EnqueueManyTx in a transaction of their own, until
// o.activities are in the store. The queue is not started.
func runEnqueueRate(ctx context.Context, o *options) (*report, error) {
	sa, err := openStandalone(ctx, o, 0) // the queue is not started
	if err != nil {
		return nil, err
	}
	defer sa.close()
	be, q := sa.be, sa.q
	inbox := []string{"https://enqueue.example/inbox"}
	makeBatch := func(first, n int) []queue.Activity {
		b := make([]queue.Activity, n)
		for i := range b {
			b[i] = queue.Activity{Body: activityBody(first+i, 0, o.bodyBytes), Inboxes: inbox, IdempotencyKey: idempotencyKey(o, first+i)}
		}
		return b
	}
	if _, err := q.EnqueueMany(ctx, makeBatch(0, o.batch)); err != nil { // warm-up
		return nil, err
	}
	stmtStart := be.statements()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.enqueuers)
	start := time.Now()
	for range o.enqueuers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				first := int(next.Add(int64(o.batch))) - o.batch
				if first >= o.activities {
					return
				}
				batch := makeBatch(o.batch+first, min(o.batch, o.activities-first))
				var err error
				if o.txPerBatch {
					err = be.enqueueTx(ctx, q, batch)
				} else {
					_, err = q.EnqueueMany(ctx, batch)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	rep := &report{scenario: o.scenario, opts: o, activities: o.activities, enqueueElapsed: elapsed}
	if o.store != "memory" {
		rep.hasStatements = true
		rep.appendStatements = be.statements() - stmtStart
	}
	return rep, nil
}

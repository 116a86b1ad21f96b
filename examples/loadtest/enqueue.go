package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/store/postgres"
)

// enqueuer enqueues a run's activities through q, or, when st is set
// (-enqueue-tx), each paced activity in a transaction of its own on pool,
// with EnqueueTx, as a web server creating posts would.
type enqueuer struct {
	q    *queue.Queue
	st   *postgres.Store
	pool *pgxpool.Pool
}

// enqueueOne enqueues one activity.
func (p enqueuer) enqueueOne(ctx context.Context, a queue.Activity) error {
	if p.st == nil {
		_, err := p.q.Enqueue(ctx, a)
		return err
	}
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error { return p.q.EnqueueTx(ctx, p.st.Tx(tx), a) })
}

// enqueueAll enqueues o.activities from sequence number firstSeq on: one
// Enqueue (or transaction with EnqueueTx) each at o.rate, or EnqueueMany
// batches as fast as possible. It returns how long that took.
func enqueueAll(ctx context.Context, o *options, firstSeq int, p enqueuer, in *inboxes, appends *atomic.Int64, slowest *time.Duration) (time.Duration, error) {
	q := p.q
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
			if err := p.enqueueOne(ctx, activity(seq, callStart.UnixNano())); err != nil {
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

package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/queue"
)

// enqueueAll enqueues o.activities from sequence number firstSeq on: one
// Enqueue each at o.rate, or EnqueueMany batches as fast as possible. It
// returns how long that took.
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

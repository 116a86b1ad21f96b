package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/queue"
)

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
func deliverRound(ctx context.Context, o *options, r int, q enqueuer, in *inboxes, statements func() int64, cpu func() time.Duration, remote bool) (round, error) {
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
				printBehind(ctx, q.q)
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

// dbLatencyOfRound is the round trip the proxy adds in round r: with
// -db-latency-alternate none in the 1st, 3rd, ... rounds.
func dbLatencyOfRound(o *options, r int) time.Duration {
	if o.dbAlternate && r%2 == 0 {
		return 0
	}
	return o.dbLatency
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

package queue

import (
	"context"
	"log/slog"
	"time"

	"github.com/apqueue/apqueue/store"
)

// prune deletes delivered activities, then old dead letters (run every
// Config.PruneInterval):
// those below the lowest cursor of a live domain. A dead domain left behind
// is fast-forwarded by the store in the same step; each one is logged with
// how many IDs it skipped, and a local worker of it moves on too.
func (q *Queue) prune(ctx context.Context) {
	defer q.pruneDeadLetters(ctx)
	res, err := q.store.Prune(ctx)
	if err != nil {
		if ctx.Err() == nil {
			q.logger.WarnContext(ctx, "apqueue: pruning the activity log failed", slog.Any("error", err))
		}
		return
	}
	for _, ff := range res.FastForwarded {
		q.logger.WarnContext(ctx, "apqueue: dead domain fast-forwarded by retention; these activities were never delivered to it",
			slog.String("domain", ff.Domain), slog.Int64("from", ff.From), slog.Int64("to", ff.To), slog.Int64("skipped_ids", ff.To-ff.From))
		q.mu.Lock()
		w := q.workers[ff.Domain]
		q.mu.Unlock()
		if w != nil {
			w.fastForward(ff.To)
		}
	}
	if res.Deleted > 0 {
		q.logger.DebugContext(ctx, "apqueue: pruned activity log", slog.Int64("deleted", res.Deleted), slog.Int64("below", res.Below))
	}
	q.pruneDeadLetters(ctx)
}

// pruneDeadLetters applies Config.DeadLetterRetention and DeadLetterCap,
// when the store can (store.DeadLetterPruner), in the same periodic job.
func (q *Queue) pruneDeadLetters(ctx context.Context) {
	p, ok := q.store.(store.DeadLetterPruner)
	if !ok {
		return
	}
	var olderThan time.Time
	if q.cfg.DeadLetterRetention > 0 {
		olderThan = q.cfg.clock.Now().Add(-q.cfg.DeadLetterRetention)
	}
	n, err := p.PruneDeadLetters(ctx, olderThan, max(q.cfg.DeadLetterCap, 0))
	if err != nil {
		if ctx.Err() == nil {
			q.logger.WarnContext(ctx, "apqueue: pruning dead letters failed; retrying at the next interval",
				slog.Int("deleted", n), slog.Any("error", err))
		}
		return
	}
	if n > 0 {
		q.logger.InfoContext(ctx, "apqueue: pruned dead letters", slog.Int("deleted", n))
	}
}

// fastForward moves a dead domain's worker past IDs the store no longer
// keeps for it. It is applied by the run goroutine.
func (w *worker) fastForward(to int64) {
	w.mu.Lock()
	w.skipTo = max(w.skipTo, to)
	w.mu.Unlock()
	w.poke()
}

// applySkip drops pending deliveries at or below a requested skip point and
// moves the read position past it, and makes every pending delivery due now
// when an admin cleared the backoff. Called by the run goroutine.
func (w *worker) applySkip() {
	w.mu.Lock()
	to, retryNow := w.skipTo, w.retryNow
	w.skipTo, w.retryNow = 0, false
	w.mu.Unlock()
	if retryNow {
		for _, d := range w.pending {
			d.nextAttempt = time.Time{}
		}
	}
	if to == 0 {
		return
	}
	kept := w.pending[:0]
	for _, d := range w.pending {
		if d.entry.act.ID <= to && !d.inFlight {
			continue
		}
		kept = append(kept, d)
	}
	clear(w.pending[len(kept):])
	w.pending = kept
	w.scanned = max(w.scanned, to)
}

package queue

import (
	"context"
	"log/slog"
	"time"

	"github.com/apqueue/apqueue/store"
)

// prune deletes delivered activities and expired idempotency keys, then
// old dead letters (run every Config.PruneInterval): those below the lowest
// cursor of a live domain. A dead domain left behind is fast-forwarded by
// the store in the same step; each one is logged with how many IDs it
// skipped, and a local worker of it moves on too.
//
// Each of the two store calls is bounded by the longer of StoreTimeout and
// PruneInterval: stores prune in steps that each commit, so a prune cut
// short keeps what it did and the next one goes on, and one on a
// connection that died without a word ends instead of holding its
// connection until TCP gives up.
func (q *Queue) prune(ctx context.Context) {
	defer q.pruneDeadLetters(ctx)
	callCtx, cancel := storeCall(ctx, q.pruneTimeout())
	defer cancel()
	res, err := q.store.Prune(callCtx)
	// The fast-forwards a store reports stand even when a later step of
	// the prune failed.
	for _, ff := range res.FastForwarded {
		q.logger.WarnContext(ctx, "apqueue: dead domain fast-forwarded by retention; these activities were never delivered to it",
			slog.String("domain", ff.Domain), slog.Int64("from", ff.From), slog.Int64("to", ff.To), slog.Int64("skipped_ids", ff.To-ff.From))
		q.mu.Lock()
		w := q.workers[ff.Domain]
		q.mu.Unlock()
		if w != nil {
			w.skipTo(ff.To)
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			q.logger.WarnContext(ctx, "apqueue: pruning the activity log failed", slog.Any("error", err))
		}
		return
	}
	if res.Deleted > 0 {
		q.logger.DebugContext(ctx, "apqueue: pruned activity log", slog.Int64("deleted", res.Deleted), slog.Int64("below", res.Below))
	}
	if res.ExpiredKeys > 0 {
		q.logger.DebugContext(ctx, "apqueue: deleted expired idempotency keys", slog.Int64("deleted", res.ExpiredKeys))
	}
}

// pruneTimeout bounds each store call of the retention job (see prune).
func (q *Queue) pruneTimeout() time.Duration {
	return max(q.cfg.StoreTimeout, q.cfg.PruneInterval)
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
	callCtx, cancel := storeCall(ctx, q.pruneTimeout())
	defer cancel()
	n, err := p.PruneDeadLetters(callCtx, olderThan, max(q.cfg.DeadLetterCap, 0))
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

// applySkip drops pending deliveries at or below to (an admin skip, a
// retention fast-forward) and moves the read position and the cursor past
// it. In-flight deliveries finish; nothing else the skip removed is sent.
// Called by the run goroutine.
func (w *worker) applySkip(to int64) {
	kept := w.pending[:0]
	for _, d := range w.pending {
		if d.entry.act.ID <= to && !d.inFlight {
			w.pendingBytes -= d.bytes
			if !d.settled {
				w.unsettled--
				if d.attempts == 0 {
					w.untried--
				}
			}
			continue
		}
		kept = append(kept, d)
	}
	w.progressed = true
	clear(w.pending[len(kept):])
	w.pending = kept
	for id := range w.othersSettled {
		if id <= to {
			delete(w.othersSettled, id) // its activity was skipped
		}
	}
	w.settledAbove = rangesAbove(w.settledAbove, to)
	w.scanned = max(w.scanned, to)
	w.caughtUp = false
}

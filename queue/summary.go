package queue

import (
	"context"
	"log/slog"
	"time"

	"github.com/apqueue/apqueue/store"
)

// summarize logs (every Config.SummaryInterval) each local domain that is
// behind or failing, with the cause, and a one-line total: what an admin
// reads first when federation falls behind.
func (q *Queue) summarize(ctx context.Context) {
	st, err := q.Stats(ctx)
	if err != nil {
		if ctx.Err() == nil {
			q.logger.WarnContext(ctx, "apqueue: federation summary failed", slog.Any("error", err))
		}
		return
	}
	q.logSummary(ctx, st, time.Now())
}

func (q *Queue) logSummary(ctx context.Context, st Stats, now time.Time) {
	behind := 0
	for _, d := range st.Domains {
		if !d.Local {
			continue
		}
		lagging := d.Pending > 0 && d.Lag(now) > q.cfg.SummaryInterval
		if !lagging && d.FailCount == 0 && d.Status == store.StatusActive {
			continue
		}
		behind++
		attrs := []any{
			slog.String("domain", d.Domain), slog.String("status", string(d.Status)),
			slog.Int("pending", d.Pending), slog.Int64("unread", d.Unread), slog.Duration("lag", d.Lag(now).Round(time.Second)),
			slog.Int("in_flight", d.InFlight), slog.Int("fail_count", d.FailCount),
		}
		if d.FailCount > 0 {
			attrs = append(attrs, slog.Int("last_status", d.LastStatus), slog.String("last_error", d.LastError),
				slog.Duration("retry_in", max(d.NextAttemptAt.Sub(now), 0).Round(time.Second)),
				slog.Duration("failing_for", now.Sub(d.FailingSince).Round(time.Second)))
		}
		if d.LatencyP50 > 0 {
			attrs = append(attrs, slog.Duration("latency_p50", d.LatencyP50))
		}
		q.logger.InfoContext(ctx, "apqueue: domain behind", attrs...)
	}
	q.logger.InfoContext(ctx, "apqueue: federation summary",
		slog.Int64("head", st.Head), slog.Int("domains", len(st.Domains)), slog.Int("behind_or_failing", behind),
		slog.Int("failing", st.Failing), slog.Int("dead", st.Dead), slog.Int("paused", st.Paused),
		slog.Int("pending", st.Pending), slog.Int("in_flight", st.InFlight),
		slog.Int64("delivered", st.Delivered), slog.Int64("retried", st.Retried), slog.Int64("dead_lettered", st.DeadLettered))
}

package queue

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

func TestStatsShowLagFailuresAndCounts(t *testing.T) {
	t.Parallel()
	st := newMemory()
	release := make(chan struct{})
	defer close(release)
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		switch d.Domain {
		case "slow.example":
			select {
			case <-release:
			case <-ctx.Done():
			}
		case "broken.example":
			return sender.Result{Outcome: sender.Retry, Status: 503, DomainLevel: true, Reason: "503 Service Unavailable"}
		}
		return sender.Success(202)
	}}
	cfg := testConfig()
	cfg.MaxInFlightPerDomain = 2
	q := startQueue(t, st, fake, cfg)
	var acts []Activity
	for i := range 5 {
		acts = append(acts, note(i, "https://ok.example/inbox", "https://slow.example/inbox", "https://broken.example/inbox"))
	}
	ids := enqueueAll(t, q, acts...)
	ctx := context.Background()
	eventually(t, func() bool {
		s, err := q.Stats(ctx)
		require.NoError(t, err)
		return len(s.Domains) == 3 && s.Domains[1].Delivered == 5 && s.Domains[2].InFlight == 2 && s.Domains[0].FailCount > 0
	}, "stats reflect the deliveries")
	s, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, ids[4], s.Head)
	broken, ok, slow := s.Domains[0], s.Domains[1], s.Domains[2]
	require.Equal(t, "broken.example", broken.Domain)
	require.Equal(t, 503, broken.LastStatus)
	require.Equal(t, "503 Service Unavailable", broken.LastError)
	require.Equal(t, 5, broken.Pending)
	require.False(t, broken.OldestPending.IsZero())
	require.Positive(t, broken.Retried)
	require.Equal(t, ids[4], ok.Cursor)
	require.Zero(t, ok.Pending)
	require.True(t, ok.Local)
	require.Equal(t, q.cfg.OwnerID, ok.Owner)
	require.Equal(t, 5, slow.Pending)
	require.Equal(t, 1, s.Failing)
	require.Equal(t, int64(5), s.Delivered)
	require.Equal(t, store.StatusActive, slow.Status)
}

func TestSummaryLogsDomainsBehindWithCauses(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Domain == "broken.example" {
			return sender.Result{Outcome: sender.Retry, Status: 502, DomainLevel: true, Reason: "502 Bad Gateway"}
		}
		return sender.Success(202)
	}}
	logs := &logBuffer{}
	cfg := testConfig()
	cfg.SummaryInterval = 20 * time.Millisecond
	cfg.BackoffMin = time.Minute
	cfg.BackoffMax = time.Hour
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	q := startQueue(t, st, fake, cfg)
	enqueueAll(t, q, note(1, "https://ok.example/inbox", "https://broken.example/inbox"))
	eventually(t, func() bool { return strings.Contains(logs.String(), "domain=broken.example") }, "failing domain logged")
	eventually(t, func() bool { return strings.Contains(logs.String(), "federation summary") }, "total logged")
	out := logs.String()
	require.Contains(t, out, `last_error="502 Bad Gateway"`)
	require.Contains(t, out, "retry_in=")
	require.NotContains(t, out, "domain=ok.example", "healthy domains stay out of the summary")
	require.Regexp(t, `federation summary.*domains=2 behind_or_failing=1 failing=1`, out)
}

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
	// Each domain is behind, rightly, while its request takes longer than
	// SummaryInterval (20 ms, which a loaded machine exceeds): read only a
	// summary made after the workers published the delivery to ok.example
	// and the failure of broken.example.
	eventually(t, func() bool {
		s, err := q.Stats(context.Background())
		require.NoError(t, err)
		published := 0
		for _, d := range s.Domains {
			switch {
			case d.Domain == "ok.example" && d.Delivered == 1 && d.Pending == 0,
				d.Domain == "broken.example" && d.FailCount > 0:
				published++
			}
		}
		return published == 2
	}, "ok.example delivered, broken.example failed")
	mark := len(logs.String())
	// The first total after the mark may end a summary that read the
	// stats before it; the lines after that total, through the next one,
	// are a whole summary made after.
	var totals []int
	var lines []string
	eventually(t, func() bool {
		lines = strings.Split(logs.String()[mark:], "\n")
		totals = totals[:0]
		for i, l := range lines {
			if strings.Contains(l, "apqueue: federation summary") {
				totals = append(totals, i)
			}
		}
		return len(totals) >= 2
	}, "two totals logged since ok.example was delivered")
	out := strings.Join(lines[totals[0]+1:totals[1]+1], "\n")
	require.Contains(t, out, "domain=broken.example", "failing domain logged")
	require.Contains(t, out, `last_error="502 Bad Gateway"`)
	require.Contains(t, out, "retry_in=")
	require.NotContains(t, out, "domain=ok.example", "healthy domains stay out of the summary")
	require.Regexp(t, `federation summary.*domains=2 behind_or_failing=1 failing=1`, out)
}

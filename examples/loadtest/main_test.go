package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/leakcheck"
)

// TestMain fails the run if a load test leaves goroutines behind: every run
// stops its queues, inboxes, proxy and samplers. Run as the inbox process
// of a test (see startInboxProcess), it serves the inboxes instead.
func TestMain(m *testing.M) {
	if os.Getenv(inboxChildEnv) != "" {
		if err := runInboxChild(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest inbox process:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	leakcheck.Main(m)
}

// TestRestartScenarioSmoke drains a small backlog after a restart, with the
// inboxes in their own process, and checks the report: everything
// delivered once, each log row read at most twice, the heap measured.
func TestRestartScenarioSmoke(t *testing.T) {
	o, err := parseOptions([]string{"-scenario", "restart", "-domains", "30", "-activities", "300", "-global-inflight", "16", "-timeout", "30s"})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := run(ctx, o)
	require.NoError(t, err)
	require.Equal(t, int64(300*o.recipientsPerActivity()), rep.expected)
	require.Equal(t, rep.expected, rep.delivered, "every delivery arrives, as the inbox process reports")
	require.Zero(t, rep.duplicates)
	require.NotNil(t, rep.restart)
	require.LessOrEqual(t, rep.restart.reads.maxReads, int32(2))
	require.Positive(t, rep.restart.elapsed)
	require.Positive(t, rep.restart.peakLive)
	var out bytes.Buffer
	rep.print(&out)
	require.Contains(t, out.String(), "the inboxes run in another process")
}

// TestSmoke runs tiny loads through the whole program (memory store, a few
// loopback inboxes, about a second each) and checks the report's invariants:
// everything delivered once, nothing rejected, the baselines and ratios
// computed and printed.
func TestSmoke(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"unsigned, two rounds", []string{"-domains", "3", "-activities", "300", "-rounds", "2", "-batch", "50", "-baseline-duration", "300ms", "-timeout", "20s"}},
		{"signed audience", []string{"-domains", "2", "-activities", "40", "-rounds", "1", "-fanout", "audience", "-sign", "-baseline-duration", "300ms", "-timeout", "20s"}},
		{"signed rfc9421", []string{"-domains", "2", "-activities", "40", "-rounds", "1", "-sign", "-sign-scheme", "rfc9421", "-baseline-duration", "300ms", "-timeout", "20s"}},
		{"paced all domains", []string{"-domains", "2", "-activities", "20", "-rate", "100", "-fanout", "all", "-fail-rate", "0.1", "-backoff-min", "20ms", "-baseline=false", "-timeout", "20s"}},
		{"sqlite store", []string{"-store", "sqlite", "-domains", "4", "-activities", "100", "-rounds", "1", "-baseline=false", "-timeout", "20s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOptions(tc.args)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rep, err := run(ctx, o)
			require.NoError(t, err)

			require.Equal(t, int64(o.rounds*o.activities*o.domains), rep.expected)
			require.Len(t, rep.rounds, o.rounds)
			require.Equal(t, rep.expected, rep.delivered, "every delivery arrives")
			require.Zero(t, rep.duplicates, "no duplicates without a crash")
			require.Zero(t, rep.rejected, "the inboxes accept every request (signatures included)")
			require.Positive(t, rep.deliveriesPerSec())
			require.Positive(t, rep.p50)
			require.LessOrEqual(t, rep.p50, rep.p99)
			require.LessOrEqual(t, rep.p99, rep.maxLatency+time.Millisecond)
			require.Positive(t, rep.peakHeap)
			if o.baseline {
				require.Len(t, rep.bareRuns, o.rounds+1, "bare loop measured before the first round and after each")
				require.Positive(t, rep.bare())
				require.Positive(t, rep.queueBareRatio())
			}
			if o.sign {
				require.Positive(t, rep.rawSign())
				require.Positive(t, rep.signRatio())
			}
			if o.failRate > 0 {
				require.Positive(t, rep.failed)
				require.Positive(t, rep.retries)
			}

			var out bytes.Buffer
			rep.print(&out)
			require.Contains(t, out.String(), "deliveries/s")
			if o.baseline {
				require.Contains(t, out.String(), "queue/bare")
			}
		})
	}
}

// TestEnqueueScenarioSQLite runs the enqueue scenario on SQLite, batched
// and with a transaction per activity, and checks that every activity was
// counted and the statements reported.
func TestEnqueueScenarioSQLite(t *testing.T) {
	for _, args := range [][]string{
		{"-scenario", "enqueue", "-store", "sqlite", "-activities", "500"},
		{"-scenario", "enqueue", "-store", "sqlite", "-tx", "-batch", "1", "-activities", "50"},
	} {
		o, err := parseOptions(args)
		require.NoError(t, err)
		rep, err := run(t.Context(), o)
		require.NoError(t, err)
		require.Equal(t, o.activities, rep.activities)
		require.Positive(t, rep.enqueueRate())
		require.True(t, rep.hasStatements)
		require.Positive(t, rep.appendStatements)
		var out bytes.Buffer
		rep.print(&out)
		require.Contains(t, out.String(), "store sqlite")
	}
	_, err := parseOptions([]string{"-tx"})
	require.ErrorContains(t, err, "-tx needs")
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		want := time.Duration(q*1000) * time.Millisecond
		require.InEpsilon(t, float64(want), float64(h.quantile(q)), 0.02, "q=%v", q)
	}
	require.Equal(t, time.Second, time.Duration(h.max.Load()))
}

func TestParseOptionsScenarioPresets(t *testing.T) {
	o, err := parseOptions([]string{"-scenario", "postmortem"})
	require.NoError(t, err)
	require.Equal(t, 1, o.domains)
	require.Equal(t, time.Second, o.inboxLatency)
	require.Equal(t, 90, o.activities, "3/s for 30 s")

	o, err = parseOptions([]string{"-scenario", "postmortem", "-rate", "5"})
	require.NoError(t, err)
	require.Equal(t, 150, o.activities, "a flag given overrides the preset")

	_, err = parseOptions([]string{"-worker-mode", "exec"})
	require.Error(t, err, "exec workers need PostgreSQL")
}

// TestLatencyProxyAddsRoundTrip checks that -db-latency means a round trip:
// a request and its answer through the proxy take the added time once.
func TestLatencyProxyAddsRoundTrip(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { // an echo server
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	const rtt = 100 * time.Millisecond
	p, err := startLatencyProxy(ln.Addr().String(), rtt)
	require.NoError(t, err)
	c, err := net.Dial("tcp", p.addr())
	require.NoError(t, err)

	// The fastest of a few round trips: a stall of the machine lengthens
	// one, never shortens it.
	fastestRoundTrip := func() time.Duration {
		fastest := time.Duration(0)
		for range 3 {
			start := time.Now()
			_, err := c.Write([]byte("ping"))
			require.NoError(t, err)
			buf := make([]byte, 4)
			_, err = io.ReadFull(c, buf)
			require.NoError(t, err)
			require.Equal(t, "ping", string(buf))
			if took := time.Since(start); fastest == 0 || took < fastest {
				fastest = took
			}
		}
		return fastest
	}
	got := fastestRoundTrip()
	require.GreaterOrEqual(t, got, rtt)
	require.Less(t, got, 2*rtt, "the latency was added more than once")
	p.setRTT(0)
	require.Less(t, fastestRoundTrip(), rtt, "the latency can be switched off in a run")

	require.NoError(t, c.Close())
	require.NoError(t, p.close())
	require.NoError(t, ln.Close())
	<-done
}

// TestFaultsScenarioSmoke runs the faults scenario small and fast (a few
// seconds, quick backoff, 1 s Retry-After) so that it cannot rot: it runs,
// delivers everything but the broken activity, and reports every measure.
// It does not check the measures against their targets: that is what the
// scenario is run for.
func TestFaultsScenarioSmoke(t *testing.T) {
	o, err := parseOptions([]string{"-scenario", "faults", "-duration", "3s", "-fault-retry-after", "1", "-fault-throttles", "2",
		"-lease-ttl", "1500ms", "-backoff-min", "20ms", "-backoff-max", "1s", "-max-attempts", "4", "-fault-saturation", "30", "-timeout", "40s"})
	require.NoError(t, err)
	require.Equal(t, 60, o.activities, "20/s for 3 s")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := run(ctx, o)
	require.NoError(t, err)

	f := rep.faults
	require.NotNil(t, f)
	require.Equal(t, int64((60+30)*faultDomains-1), rep.expected, "every activity to every domain, the broken one excepted")
	require.Equal(t, rep.expected, rep.delivered)
	require.Len(t, f.domains, faultDomains)
	for _, d := range f.domains {
		require.Positive(t, d.delivered, d.name)
		require.Positive(t, d.perSec, d.name)
		require.Equal(t, int64(30), d.saturated, d.name)
		require.Positive(t, d.saturatedPerSec, d.name)
		require.LessOrEqual(t, d.p50, d.p95, d.name)
	}
	require.Equal(t, 6, f.brokenSeq)
	require.NotEmpty(t, f.broken.brokenAttempts, "the broken activity was tried")
	require.Positive(t, f.throttle.throttled, "the throttled domain answered 429")
	require.Less(t, f.restartAt, f.handoverAt)
	require.Positive(t, f.handoverTook)

	var out bytes.Buffer
	rep.print(&out)
	for _, want := range []string{"MaxAttempts 4", "lag p95", "throughput saturated", "429 pauses", "before its dead letter", "after the graceful restart", "after the lease handover"} {
		require.Contains(t, out.String(), want)
	}
}

// TestInboxFaultIsDeterministic checks that the flaky inbox fails the same
// attempts for the same seed whatever the order they come in, and that the
// broken activity and the 429s come as configured.
func TestInboxFaultIsDeterministic(t *testing.T) {
	t.Parallel()
	outcomes := func(order []int) map[[2]int]int {
		f := newInboxFault()
		f.flakyRate, f.seed = 0.2, 7
		got := map[[2]int]int{}
		for _, seq := range order {
			for attempt := 1; attempt <= 3; attempt++ {
				now := time.Now()
				status, _ := f.answer(seq, now, now)
				got[[2]int{seq, attempt}] = status
			}
		}
		return got
	}
	forward, backward := make([]int, 500), make([]int, 500)
	for i := range forward {
		forward[i], backward[len(backward)-1-i] = i, i
	}
	a, b := outcomes(forward), outcomes(backward)
	require.Equal(t, a, b)
	failed := 0
	for _, s := range a {
		if s != 0 {
			failed++
		}
	}
	require.InDelta(t, 0.2*1500, failed, 60, "about a fifth of the attempts fail")

	f := newInboxFault()
	f.brokenSeq, f.throttleEvery, f.throttleTimes, f.retryAfter = 3, 4, 2, 3
	var statuses []int
	start := time.Now()
	for i := range 12 {
		at := start.Add(time.Duration(i) * time.Second)
		status, retryAfter := f.answer(i, at, at)
		if status == 429 {
			require.Equal(t, "3", retryAfter)
		}
		statuses = append(statuses, status)
	}
	require.Equal(t, []int{0, 0, 0, 500, 0, 0, 0, 429, 0, 0, 0, 429}, statuses)
	log := f.log()
	require.Equal(t, []time.Duration{time.Second}, log.pauses, "the request after the first 429 came a second later")
	require.Len(t, log.brokenAttempts, 1)

	f = newInboxFault()
	f.brokenSeq, f.throttleEvery, f.throttleBurst, f.throttleTimes = 3, 4, 2, 3
	statuses = nil
	for i := range 12 {
		at := start.Add(time.Duration(i) * time.Second)
		status, _ := f.answer(i, at, at)
		statuses = append(statuses, status)
	}
	require.Equal(t, []int{0, 0, 0, 500, 0, 0, 0, 429, 429, 0, 0, 429}, statuses, "bursts of two 429s, three in all")
	require.Equal(t, []time.Duration{time.Second, time.Second}, f.log().pauses)

	// A request sent before the 429 was answered is refused too, and the
	// pause runs from the last 429.
	f = newInboxFault()
	f.throttleEvery, f.throttleBurst, f.throttleTimes = 1, 1, 1
	status, _ := f.answer(0, start, start.Add(100*time.Millisecond))
	require.Equal(t, 429, status)
	status, _ = f.answer(1, start.Add(50*time.Millisecond), start.Add(150*time.Millisecond))
	require.Equal(t, 429, status, "on its way when the first 429 was answered")
	status, _ = f.answer(2, start.Add(3150*time.Millisecond), start.Add(3250*time.Millisecond))
	require.Zero(t, status)
	log = f.log()
	require.Equal(t, []time.Duration{3 * time.Second}, log.pauses)
	require.Equal(t, 1, log.onTheWay)
	require.Equal(t, 1, log.throttled)
}

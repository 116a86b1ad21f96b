package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/leakcheck"
)

// TestMain fails the run if a load test leaves goroutines behind: every run
// stops its queues, inboxes, proxy and samplers.
func TestMain(m *testing.M) { leakcheck.Main(m) }

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
	const rtt = 60 * time.Millisecond
	p, err := startLatencyProxy(ln.Addr().String(), rtt)
	require.NoError(t, err)
	c, err := net.Dial("tcp", p.addr())
	require.NoError(t, err)

	roundTrip := func() time.Duration {
		start := time.Now()
		_, err := c.Write([]byte("ping"))
		require.NoError(t, err)
		buf := make([]byte, 4)
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
		require.Equal(t, "ping", string(buf))
		return time.Since(start)
	}
	got := roundTrip()
	require.GreaterOrEqual(t, got, rtt)
	require.Less(t, got, rtt+500*time.Millisecond)
	p.setRTT(0)
	require.Less(t, roundTrip(), rtt, "the latency can be switched off in a run")

	require.NoError(t, c.Close())
	require.NoError(t, p.close())
	require.NoError(t, ln.Close())
	<-done
}

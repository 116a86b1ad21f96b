package queue

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender/sendertest"
)

func TestSchedSaturated(t *testing.T) {
	t.Parallel()
	// Bucket i counts waits in [buckets[i], buckets[i+1]).
	buckets := []float64{math.Inf(-1), 0, 1e-6, 1e-4, 1e-3, 1e-2, math.Inf(1)}
	for _, tc := range []struct {
		name  string
		delta []uint64 // waits in the interval, per bucket
		want  bool
	}{
		{"idle: no waits", []uint64{0, 0, 0, 0, 0, 0}, false},
		{"microsecond waits only", []uint64{0, 500, 4000, 300, 0, 0}, false},
		{"a few long waits among many", []uint64{0, 500, 4000, 300, 100, 0}, false},
		{"an eighth of the waits a millisecond or more", []uint64{0, 100, 600, 300, 120, 30}, true},
		{"long waits, but too few to say", []uint64{0, 0, 10, 10, 20, 5}, false},
		{"exactly the share", []uint64{0, 0, 0, 95, 5, 0}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := []uint64{7, 1000, 2000, 3000, 40, 2}
			counts := make([]uint64, len(prev))
			for i := range prev {
				counts[i] = prev[i] + tc.delta[i]
			}
			require.Equal(t, tc.want, schedSaturated(buckets, counts, prev))
		})
	}
}

func TestCPUGaugeReadsTheRuntime(t *testing.T) {
	t.Parallel()
	g := newCPUGauge()
	require.False(t, g.read(), "the first reading has nothing to compare with")
	require.NotEmpty(t, g.prev, "the runtime has the scheduler latency metric")
	g.read() // measures the interval since the first, whatever it was

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.run(ctx)
	}()
	cancel()
	<-done
	require.False(t, g.saturated(), "a stopped gauge never says saturated")
}

func TestStatsSayWhenTheCPUIsSaturated(t *testing.T) {
	t.Parallel()
	for _, saturated := range []bool{false, true} {
		cfg := testConfig()
		cfg.cpuSaturated = func() bool { return saturated }
		q := startQueue(t, newMemory(), &sendertest.Fake{}, cfg)
		st, err := q.Stats(context.Background())
		require.NoError(t, err)
		require.Equal(t, saturated, st.CPUSaturated)
		rec := httptest.NewRecorder()
		q.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		require.Equal(t, http.StatusOK, rec.Code)
		if saturated {
			require.Contains(t, rec.Body.String(), `id="cpu-saturated"`)
		} else {
			require.NotContains(t, rec.Body.String(), `id="cpu-saturated"`)
		}
	}
}

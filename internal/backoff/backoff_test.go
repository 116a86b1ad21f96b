package backoff

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDelayDoublesUpToMax(t *testing.T) {
	t.Parallel()
	p := Policy{Min: time.Second, Max: time.Minute}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	for i, w := range want {
		require.Equal(t, w, p.Delay(i+1, 0), "failure %d", i+1)
	}
	require.Equal(t, time.Minute, p.Delay(1000, 0), "no overflow on many failures")
	require.Equal(t, time.Second, p.Delay(0, 0), "zero failures count as one")
}

func TestDelayJitterStaysInBounds(t *testing.T) {
	t.Parallel()
	p := Policy{Min: 10 * time.Second, Max: time.Hour, Jitter: 0.2}
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := p.Delay(2, 0)
		require.GreaterOrEqual(t, d, 16*time.Second)
		require.LessOrEqual(t, d, 24*time.Second)
		seen[d] = true
	}
	require.Greater(t, len(seen), 100, "jitter spreads the delays")
}

func TestDelayHonoursRetryAfterUpToMax(t *testing.T) {
	t.Parallel()
	p := Policy{Min: time.Second, Max: time.Minute}
	require.Equal(t, 30*time.Second, p.Delay(1, 30*time.Second))
	require.Equal(t, 4*time.Second, p.Delay(3, time.Second), "a shorter Retry-After does not shorten the backoff")
	require.Equal(t, time.Minute, p.Delay(1, time.Hour), "Retry-After is capped")
}

package queue

import (
	"slices"
	"time"
)

// latencyRing keeps the durations of a domain's most recent deliveries, in
// fixed memory.
type latencyRing struct {
	samples [32]time.Duration
	n       int // samples recorded, saturating at len(samples)
	next    int
}

func (r *latencyRing) add(d time.Duration) {
	r.samples[r.next] = d
	r.next = (r.next + 1) % len(r.samples)
	r.n = min(r.n+1, len(r.samples))
}

// percentile returns the p-th percentile (0 < p <= 100) of the recorded
// samples, or 0 when there are none.
func (r *latencyRing) percentile(p float64) time.Duration {
	if r.n == 0 {
		return 0
	}
	s := slices.Clone(r.samples[:r.n])
	slices.Sort(s)
	i := int(float64(r.n)*p/100+0.5) - 1
	return s[min(max(i, 0), r.n-1)]
}

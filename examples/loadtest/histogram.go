package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram records durations in log-linear buckets of microseconds: exact
// below 128 µs, then 64 buckets per power of two (under 1.6% error). It is
// lock-free and its size is fixed, so recording a million deliveries does not
// show up in the peak memory the load generator reports.
type histogram struct {
	buckets [histBuckets]atomic.Uint64
	count   atomic.Uint64
	max     atomic.Int64 // nanoseconds
}

const histBuckets = 128 + 64*40

func histIndex(us uint64) int {
	if us < 128 {
		return int(us)
	}
	shift := bits.Len64(us) - 7 // us>>shift is in [64, 128)
	return min(128+(shift-1)*64+int(us>>shift)-64, histBuckets-1)
}

// histValue returns the middle of bucket i, in microseconds.
func histValue(i int) float64 {
	if i < 128 {
		return float64(i) + 0.5
	}
	shift := (i-128)/64 + 1
	low := uint64((i-128)%64+64) << shift
	return float64(low) + float64(uint64(1)<<shift)/2
}

func (h *histogram) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.buckets[histIndex(uint64(d/time.Microsecond))].Add(1)
	h.count.Add(1)
	storeMax(&h.max, int64(d))
}

// quantile returns the q-quantile (0 < q ≤ 1), 0 when nothing was recorded.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= rank {
			return min(time.Duration(histValue(i)*float64(time.Microsecond)), time.Duration(h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

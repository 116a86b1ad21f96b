// Package backoff computes exponential retry delays with jitter and a cap.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff: the n-th consecutive failure waits about
// Min·2^(n-1), never more than Max, spread by ±Jitter (a fraction in [0,1))
// so that many domains failing at once do not retry in lockstep.
type Policy struct {
	Min    time.Duration
	Max    time.Duration
	Jitter float64
}

// Delay returns the wait after the given number of consecutive failures
// (1 for the first). A receiver's Retry-After, when positive, is honoured if
// it is longer than the computed delay, up to Max.
func (p Policy) Delay(failures int, retryAfter time.Duration) time.Duration {
	if failures < 1 {
		failures = 1
	}
	d := p.Min
	for i := 1; i < failures && d < p.Max; i++ {
		d *= 2
	}
	if d > p.Max || d <= 0 {
		d = p.Max
	}
	if p.Jitter > 0 {
		spread := float64(d) * p.Jitter
		d = time.Duration(float64(d) - spread + rand.Float64()*2*spread)
	}
	if retryAfter > d {
		d = retryAfter
	}
	if d > p.Max {
		d = p.Max
	}
	return d
}

// After returns the wait a receiver asked for with Retry-After: never
// shorter than asked, spread upwards by up to Jitter so that many senders
// told the same time do not return in lockstep, and never more than Max.
func (p Policy) After(retryAfter time.Duration) time.Duration {
	d := max(retryAfter, 0)
	if p.Jitter > 0 {
		d += time.Duration(rand.Float64() * p.Jitter * float64(d))
	}
	return min(d, p.Max)
}

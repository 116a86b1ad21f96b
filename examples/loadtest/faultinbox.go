package main

import (
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// inboxFault is how one inbox of the faults scenario misbehaves, and what it
// saw. Its answers are deterministic: the broken activity always fails, a
// 429 comes on fixed request counts, and whether a delivery fails at random
// depends only on the seed, the activity and the attempt's number, not on
// timing.
type inboxFault struct {
	// brokenSeq is the activity answered 500 forever; -1 for none.
	brokenSeq int
	// flakyRate is the fraction of attempts answered 500 (no Retry-After),
	// drawn from seed.
	flakyRate float64
	seed      uint64
	// Every throttleEvery-th request starts an episode of throttleBurst
	// requests in a row answered 429 with Retry-After: retryAfter seconds,
	// as a rate-limited server answers until its window passes; at most
	// throttleTimes 429s in all.
	throttleEvery, throttleBurst, throttleTimes int
	retryAfter                                  int

	mu       sync.Mutex
	requests int
	attempts map[int]int // attempts per activity, for flakyRate
	// brokenAttempts are the arrival times of the broken activity's
	// attempts.
	brokenAttempts []time.Time
	throttled      int
	burstLeft      int // 429s still to answer in this episode
	lastThrottle   time.Time
	waiting        bool // a 429 was answered and no request came since
	// pauses are the times from each 429 (the last of a burst) to the
	// arrival of the next request sent after it; onTheWay counts the
	// requests that arrived before it was answered or within
	// throttleGrace after (sent before the queue could have read it).
	pauses   []time.Duration
	onTheWay int
}

// throttleGrace is how soon after a 429 a request is taken to have been sent
// before the queue read the 429.
const throttleGrace = 10 * time.Millisecond

// newInboxFault returns a fault that does nothing yet: no broken activity,
// no random failures, no 429s.
func newInboxFault() *inboxFault {
	return &inboxFault{brokenSeq: -1, attempts: map[int]int{}}
}

// answer decides the answer, at now, to an attempt at delivering activity
// seq that arrived at arrived (before the inbox's latency): a status and
// Retry-After header to fail it with, or 0 to accept it. A request that
// arrived before the last 429 was answered (or within throttleGrace after)
// was sent before the queue could know of it: it is refused with a 429 too,
// as a rate limiter would, without counting towards throttleTimes, and the
// pause is measured from the last 429 to the first request sent later.
func (f *inboxFault) answer(seq int, arrived, now time.Time) (status int, retryAfter string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	f.attempts[seq]++
	onTheWay := false
	if f.waiting {
		if arrived.Before(f.lastThrottle.Add(throttleGrace)) {
			onTheWay = true
			f.onTheWay++
		} else {
			f.pauses = append(f.pauses, arrived.Sub(f.lastThrottle))
			f.waiting = false
		}
	}
	if seq == f.brokenSeq {
		f.brokenAttempts = append(f.brokenAttempts, now)
		return http.StatusInternalServerError, ""
	}
	if onTheWay {
		return f.throttle(now)
	}
	if f.throttled < f.throttleTimes && (f.burstLeft > 0 || f.throttleEvery > 0 && f.requests%f.throttleEvery == 0) {
		if f.burstLeft == 0 {
			f.burstLeft = max(1, f.throttleBurst)
		}
		f.burstLeft--
		f.throttled++
		return f.throttle(now)
	}
	if f.flakyRate > 0 && f.draw(seq, f.attempts[seq]) < f.flakyRate {
		return http.StatusInternalServerError, ""
	}
	return 0, ""
}

// throttle answers a 429 at now and waits for the next request.
func (f *inboxFault) throttle(now time.Time) (int, string) {
	f.lastThrottle, f.waiting = now, true
	return http.StatusTooManyRequests, strconv.Itoa(f.retryAfter)
}

// draw is the random number of an attempt at an activity: the same for the
// same seed, activity and attempt, whatever the timing.
func (f *inboxFault) draw(seq, attempt int) float64 {
	return rand.New(rand.NewPCG(f.seed, uint64(seq)<<24|uint64(attempt))).Float64()
}

// faultLog is what an inboxFault saw, copied out.
type faultLog struct {
	requests, throttled, onTheWay int
	pauses                        []time.Duration
	brokenAttempts                []time.Time
}

func (f *inboxFault) log() faultLog {
	f.mu.Lock()
	defer f.mu.Unlock()
	return faultLog{
		requests: f.requests, throttled: f.throttled, onTheWay: f.onTheWay,
		pauses: slices.Clone(f.pauses), brokenAttempts: slices.Clone(f.brokenAttempts),
	}
}

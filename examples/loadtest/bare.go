package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/sender"
)

// bareLoop measures what the inboxes and the HTTP client allow without the
// queue: concurrency goroutines, goroutine g posting to domain g mod the
// number of domains in a loop, with the same sender (same transport settings,
// same signer) the queue uses, for d. It returns accepted requests per
// second and per CPU-second. Its bodies carry an enqueue time of zero, so the inboxes count
// them apart from the queue's deliveries.
func bareLoop(ctx context.Context, in *inboxes, snd sender.Sender, concurrency int, d time.Duration, bodySize int) rate {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var ok atomic.Int64
	var wg sync.WaitGroup
	start, cpu := time.Now(), cpuTime()
	for g := range concurrency {
		dom := g % len(in.domains)
		wg.Add(1)
		go func() {
			defer wg.Done()
			act := &sender.Activity{ID: int64(g + 1), Actor: actor, Body: activityBody(g, 0, bodySize)}
			for ctx.Err() == nil {
				res := snd.Send(ctx, &sender.Delivery{Activity: act, Inbox: in.sharedInbox(dom), Domain: in.domains[dom], SharedInbox: true, Attempt: 1})
				if res.Outcome == sender.Delivered {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return newRate(ok.Load(), time.Since(start), cpuTime()-cpu)
}

// rawSignRate measures rsa.SignPKCS1v15 over a SHA-256 digest with the
// 2048-bit key, from GOMAXPROCS goroutines, for d: the floor under any
// signed delivery. It returns signatures per second and per CPU-second.
func rawSignRate(key *rsa.PrivateKey, d time.Duration) rate {
	sum := sha256.Sum256([]byte("(request-target): post /inbox\nhost: remote.example\ndate: Mon, 23 Nov 2026 10:00:00 GMT\ndigest: SHA-256=x"))
	var n atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	start, cpu := time.Now(), cpuTime()
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if _, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:]); err == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return newRate(n.Load(), time.Since(start), cpuTime()-cpu)
}

// rate is a count per wall-clock second and per CPU-second of this process.
type rate struct {
	wall, cpu float64
}

func newRate(n int64, wall, cpu time.Duration) rate {
	var r rate
	if wall > 0 {
		r.wall = float64(n) / wall.Seconds()
	}
	if cpu > 0 {
		r.cpu = float64(n) / cpu.Seconds()
	}
	return r
}

package main

import (
	"runtime"
	"runtime/metrics"
	"sync"
	"time"
)

// memPeak samples runtime.MemStats every interval and keeps the peaks of
// HeapInuse and Sys, and of the live heap as the last garbage collection
// marked it (HeapInuse also counts garbage not yet collected).
// ReadMemStats stops the world briefly, so the interval is coarse.
type memPeak struct {
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup

	mu        sync.Mutex
	heapInuse uint64
	sys       uint64
	live      uint64
}

func startMemPeak(interval time.Duration) *memPeak {
	m := &memPeak{stop: make(chan struct{})}
	m.sample()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				m.sample()
			}
		}
	}()
	return m
}

func (m *memPeak) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(live)
	m.mu.Lock()
	if live[0].Value.Kind() == metrics.KindUint64 {
		m.live = max(m.live, live[0].Value.Uint64())
	}
	m.heapInuse = max(m.heapInuse, ms.HeapInuse)
	m.sys = max(m.sys, ms.Sys)
	m.mu.Unlock()
}

// finish stops sampling and returns the peaks in bytes. It may be called
// again (a deferred call on an early return), which samples once more.
func (m *memPeak) finish() (heapInuse, sys uint64) {
	m.stopped.Do(func() { close(m.stop) })
	m.wg.Wait()
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.heapInuse, m.sys
}

// peakLive is the peak of the live heap, after finish.
func (m *memPeak) peakLive() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live
}

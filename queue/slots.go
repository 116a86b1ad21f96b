package queue

import (
	"sync"
	"sync/atomic"
)

// slots is the global cap on requests in flight across all domains
// (Config.MaxInFlight). A worker never waits for a slot: it takes one if one
// is free and no other domain waits, else it joins a queue of waiting
// domains and goes on with its loop. A freed slot is handed to the domain at
// the head of that queue (added to its granted count, and the worker
// nudged), one slot per turn: a domain that wants more goes to the back,
// behind every other domain waiting, so that one domain with a huge backlog
// cannot starve the others.
type slots struct {
	mu      sync.Mutex
	cap     int
	used    int       // slots held: requests in flight, and grants not yet used
	waiting []*worker // domains waiting for a slot, each at most once
}

// tryAcquire takes a slot for w if one is free and no domain waits for one;
// otherwise it queues w (once) and reports false: w is nudged when it is
// granted one.
func (s *slots) tryAcquire(w *worker) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used < s.cap && len(s.waiting) == 0 {
		s.used++
		return true
	}
	if !w.slotQueued {
		w.slotQueued = true
		s.waiting = append(s.waiting, w)
	}
	return false
}

// release frees n slots and hands them to the waiting domains in turn.
func (s *slots) release(n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used -= n
	s.handOut()
}

// handOut grants free slots to the waiting domains, one each, in order.
func (s *slots) handOut() {
	for s.used < s.cap && len(s.waiting) > 0 {
		w := s.waiting[0]
		s.waiting[0] = nil
		s.waiting = s.waiting[1:]
		w.slotQueued = false
		s.used++
		w.slotsGranted.Add(1)
		w.poke()
	}
	if len(s.waiting) == 0 {
		s.waiting = nil
	}
}

// leave takes w out of the queue and gives back what it was granted and
// did not use: w is exiting.
func (s *slots) leave(w *worker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.slotQueued {
		for i, x := range s.waiting {
			if x == w {
				s.waiting = append(s.waiting[:i], s.waiting[i+1:]...)
				break
			}
		}
		w.slotQueued = false
	}
	s.used -= int(w.slotsGranted.Swap(0))
	s.handOut()
}

// scarce reports whether a domain asking for a slot now would wait for one.
func (s *slots) scarce() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used >= s.cap || len(s.waiting) > 0
}

// inUse returns the slots held, for tests and Stats.
func (s *slots) inUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// slotGrants is what a worker holds of the global cap: slotQueued is
// guarded by slots.mu, slotsGranted is added to by slots and taken by the
// worker's run goroutine.
type slotGrants struct {
	slotQueued   bool
	slotsGranted atomic.Int64
}

package queue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/internal/clock"
	"github.com/apqueue/apqueue/store"
)

// catchUp serves the domains that are behind the shared window, for
// example after a restart: it reads the log in blocks of fixed ID ranges,
// each read once from the store however many domains need it, indexed by
// domain like the window.
//
// The blocks in memory are a sweep over the log that the domains behind
// share, not a cache: a block stays loaded while a domain that reads on is
// in it or behind it, and a new block is loaded only when it fits in the
// memory bound (maxBytes, WindowBytes/2, with the loads under way counted
// at the size of the last whole block, and one at a time until there is
// one) once the blocks that no such domain will read again have gone
// (admitLocked has the order). A domain that finds no room waits, and is
// poked when a block comes free. So the
// domains behind in the same part of the log move through it together, and
// each block is read once for all of them, whatever the pace of each: the
// fast ones wait for the slow ones at the edge of the memory bound instead
// of evicting what the slow ones are about to read, which would make them
// load it again (what a least-recently-used cache of blocks did, reading a
// row up to 200 times after a restart with a thousand domains behind).
//
// The sweep is pulled, not pushed: each worker reads the blocks itself, as
// it reads the window, when it has room, and the catch-up only decides
// which blocks stay. A pushed sweep (one reader handing each domain its
// entries) would need a buffer per domain and a rule for a domain whose
// buffer is full; here what a domain has not taken yet stays in the block,
// the memory is the blocks' alone, and the worker remains the only one to
// change its state.
//
// A domain that cannot read on does not hold the others back:
//   - a domain that stalls (backoff, paused, suspended or dead, a failing
//     read, its pending deliveries full: see worker.readingStalled) drops
//     out at once; the block it needs may go, and it reads it again when it
//     resumes;
//   - a healthy domain that holds enough deliveries to send (busy) keeps its
//     block, and the blocks after it, for catchUpPatience after it stopped
//     reading, which covers a domain answering at the pace of the others;
//     past that, or once it was dropped that way, it no longer holds blocks
//     for itself.
//
// So a row is read once by the sweep, and once more for the domains that
// left it or joined it after it passed (a domain leased later, or one that
// fell behind the window); a third time only if such domains come back to
// the same part of the log at different times. Domains enter the sweep
// when their worker is created (join), so that the workers a lease round
// starts together share the first blocks.
//
// Each method is called by the worker it names, on its own goroutine; the
// catch-up keeps what it knows of each worker (reader) under its mutex and
// talks back only by poking.
type catchUp struct {
	store    store.Store
	span     int64 // IDs per block
	maxBytes int
	clock    clock.Clock
	patience time.Duration
	retry    time.Duration // catchUpRetry; tests of the rules set it longer
	timeout  time.Duration // bounds each load (Config.StoreTimeout); 0: none

	mu      sync.Mutex
	blocks  map[int64]*block // by first ID - 1 (a multiple of span)
	bytes   atomic.Int64     // loaded blocks' footprints
	loading int              // blocks being loaded
	// estimate is the footprint of the last whole block loaded: what a load
	// under way is counted at; sized says there was one.
	estimate int
	sized    bool
	clock0   uint64 // for least-recently-used order among free blocks
	readers  map[*worker]*reader
	// hungry counts, by block, the readers that need it and read on at once;
	// busy those that are busy and not dropped.
	hungry map[int64]int
	busy   map[int64]int
	// patienceEnds is at or before the end of the first patience among the
	// busy readers (zero when there was none): before it, none has run
	// out, and admitLocked need not look at each.
	patienceEnds time.Time
	// waiters are the readers refused a load for want of memory.
	waiters map[*reader]struct{}
	// extending are the waiters refused the rest of a block they have read
	// all of, by block; an entry whose reader no longer waits there is
	// stale, and dropped by admitLocked.
	extending map[*reader]int64
}

// catchUpPatience is how long a busy domain behind keeps the block it needs
// loaded for itself: the time a healthy domain takes to have its requests
// answered and read on, so that it stays in the sweep, but bounded, so that
// a slow domain delays the others' catch-up by at most this once.
const catchUpPatience = 5 * time.Second

// catchUpRetry bounds how long a domain refused a load waits before it
// asks again, poked or not.
const catchUpRetry = time.Second

// readerState is what a worker behind said of its reading.
type readerState int

const (
	// readerHungry reads on at once (or has not read yet).
	readerHungry readerState = iota
	// readerBusy has enough to send and reads on when its requests answer.
	readerBusy
	// readerStalled will not read for a while: it holds no block.
	readerStalled
)

// reader is what the catch-up knows of one worker behind the window.
type reader struct {
	w     *worker
	need  int64 // the block holding the worker's next ID
	state readerState
	since time.Time // when it became busy
	// dropped says a block it needed as a busy reader was dropped after
	// its patience ran out: it holds no block for itself any more.
	dropped bool
}

// block holds every activity of the log in (lo, hi].
type block struct {
	lo, hi int64
	ready  chan struct{} // closed once loaded (or failed)
	err    error
	// stopped says the load failed because its loader's context ended
	// (its worker stopped), not because the store failed.
	stopped bool
	idx     logIndex
	bytes   int
	used    uint64
}

func (b *block) loaded() bool {
	select {
	case <-b.ready:
		return true
	default:
		return false
	}
}

func newCatchUp(st store.Store, span, maxBytes int) *catchUp {
	return &catchUp{
		store: st, span: int64(span), maxBytes: maxBytes, clock: clock.Real{}, patience: catchUpPatience, retry: catchUpRetry,
		blocks: make(map[int64]*block), readers: make(map[*worker]*reader),
		hungry: make(map[int64]int), busy: make(map[int64]int), waiters: make(map[*reader]struct{}),
		extending: make(map[*reader]int64),
	}
}

// size returns the memory the loaded blocks hold.
func (c *catchUp) size() int { return int(c.bytes.Load()) }

// reset drops every block and reader.
func (c *catchUp) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.blocks)
	clear(c.readers)
	clear(c.hungry)
	clear(c.busy)
	clear(c.waiters)
	clear(c.extending)
	c.patienceEnds = time.Time{}
	c.loading = 0
	c.bytes.Store(0)
}

// blockOf returns the block that holds the ID after after.
func (c *catchUp) blockOf(after int64) int64 { return after - after%c.span }

// join enters wk in the sweep at the block it reads first, before it has
// read anything, so that block stays until it has.
func (c *catchUp) join(wk *worker, after int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.moveLocked(c.readerLocked(wk, after), c.blockOf(after), readerHungry)
}

// park records that wk stopped reading for now: busy (healthy, with enough
// to send) or, when stalled, for longer.
func (c *catchUp) park(wk *worker, stalled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.readers[wk]
	if r == nil {
		return
	}
	delete(c.waiters, r)
	state := readerBusy
	if stalled || r.dropped {
		state = readerStalled
	}
	c.moveLocked(r, r.need, state)
}

// leave forgets wk: it reads from the window now, or it exits.
func (c *catchUp) leave(wk *worker) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.readers[wk]
	if r == nil {
		return
	}
	c.moveLocked(r, r.need, readerStalled)
	delete(c.waiters, r)
	delete(c.readers, wk)
	if len(c.readers) == 0 {
		// Nobody is behind the window any more: the blocks would only take
		// room from it (see window.append) until the next one.
		for _, b := range c.blocks {
			if b.loaded() {
				c.dropLocked(b)
			}
		}
	}
}

// readerLocked returns wk's reader, new at after if it has none.
func (c *catchUp) readerLocked(wk *worker, after int64) *reader {
	r := c.readers[wk]
	if r == nil {
		r = &reader{w: wk, need: c.blockOf(after), state: readerStalled}
		c.readers[wk] = r
	}
	return r
}

// moveLocked sets r's block and state, keeping the counts, and pokes the
// waiters when a loaded block no longer has anyone holding it.
func (c *catchUp) moveLocked(r *reader, need int64, state readerState) {
	if r.need == need && r.state == state {
		return
	}
	old := r.need
	wasHungry := r.state == readerHungry
	held := wasHungry || (r.state == readerBusy && !r.dropped)
	c.count(r, -1)
	if state == readerBusy && r.state != readerBusy {
		r.since = c.clock.Now()
		if end := r.since.Add(c.patience); !r.dropped && (c.patienceEnds.IsZero() || end.Before(c.patienceEnds)) {
			c.patienceEnds = end
		}
	}
	r.need, r.state = need, state
	c.count(r, +1)
	if !held || c.hungry[old] > 0 {
		return
	}
	b := c.blocks[old]
	switch loaded := b != nil && b.loaded(); {
	case loaded && c.busy[old] == 0:
		// Nobody holds the block any more: it may go.
	case !loaded && (wasHungry || c.busy[old] == 0):
		// A reader behind stopped reading before it loaded its block: a
		// load refused so that it would go first (admitLocked's last case)
		// may go now, or the blocks kept for it, and nothing else would
		// wake the one refused.
	default:
		return
	}
	c.pokeWaitersLocked()
}

// count adds d to the count r is in.
func (c *catchUp) count(r *reader, d int) {
	var m map[int64]int
	switch {
	case r.state == readerHungry:
		m = c.hungry
	case r.state == readerBusy && !r.dropped:
		m = c.busy
	default:
		return
	}
	if m[r.need] += d; m[r.need] == 0 {
		delete(m, r.need)
	}
}

// pokeWaitersLocked wakes every reader refused a load, to try again.
func (c *catchUp) pokeWaitersLocked() {
	for r := range c.waiters {
		r.w.poke()
	}
	clear(c.waiters)
}

// read returns up to limit activities addressed to wk's domain after the
// given ID, from the block that holds the next ID, and the ID up to which
// the log has been scanned for the domain. base is the window's base:
// activities above it come from the window, and every activity at or below
// it has committed.
func (c *catchUp) read(ctx context.Context, wk *worker, after int64, limit int, base int64) (logRead, error) {
	return c.readOnce(ctx, wk, after, limit, base)
}

func (c *catchUp) readOnce(ctx context.Context, wk *worker, after int64, limit int, base int64) (logRead, error) {
	lo := c.blockOf(after)
	for {
		c.mu.Lock()
		r := c.readerLocked(wk, after)
		delete(c.waiters, r)
		c.moveLocked(r, lo, readerHungry)
		b := c.blocks[lo]
		if b != nil && b.loaded() && b.err != nil {
			// A failed load: the reader that finds it loads it again.
			c.dropLocked(b)
			b = nil
		}
		switch {
		case b != nil && !b.loaded():
			c.mu.Unlock()
			select {
			case <-b.ready:
			case <-ctx.Done():
				return logRead{}, ctx.Err()
			}
			if b.err != nil && b.stopped && ctx.Err() == nil {
				// The worker that loaded it was stopped, not this one: load
				// it again (the failed block is dropped below) rather than
				// back off for another domain's reason. A load the store
				// failed, or that ran out of Config.StoreTimeout, fails
				// every reader waiting for it, and each backs off, instead
				// of trying again at once one after another.
				continue
			}
			if b.err != nil {
				return logRead{}, b.err
			}
			continue
		case b != nil && b.hi > after:
			entries := b.idx.addressed(wk.domain, after, limit)
			scanned := b.hi
			if len(entries) == limit {
				scanned = entries[limit-1].act.ID
			}
			c.clock0++
			b.used = c.clock0
			c.moveLocked(r, c.blockOf(scanned), readerHungry)
			c.mu.Unlock()
			return logRead{entries: entries, scanned: scanned}, nil
		}
		// Load the block, or the rest of a block loaded while the window's
		// base was lower (it ends early: past its end, only what follows
		// is read).
		ok, retryAt := c.admitLocked(lo, b)
		if !ok {
			c.waiters[r] = struct{}{}
			if b != nil {
				c.extending[r] = lo
			} else {
				delete(c.extending, r)
			}
			// Pokes say when there may be room; a waiter tries again after
			// catchUpRetry at the latest even so, so that a poke that never
			// comes (a case the rules above missed) costs a delay, not a
			// domain that never reads on.
			if limit := c.clock.Now().Add(c.retry); retryAt.IsZero() || limit.Before(retryAt) {
				retryAt = limit
			}
			c.mu.Unlock()
			return logRead{scanned: after, wait: true, retryAt: retryAt}, nil
		}
		nb := &block{lo: lo, hi: min(lo+c.span, base), ready: make(chan struct{})}
		if b != nil {
			c.dropLocked(b) // nb takes over its entries
		}
		c.blocks[lo] = nb
		c.loading++
		c.mu.Unlock()
		c.load(ctx, nb, b)
		if nb.err != nil {
			return logRead{}, nb.err
		}
	}
}

// admitLocked makes room for block lo to load (extending is the block
// being extended, or nil), dropping blocks in this order:
//  1. blocks that no reader is in and none behind them will reach (no
//     hungry reader, nor busy one within its patience, needs them or an
//     earlier block), least recently used first: the blocks a busy reader
//     reads next stay as long as its own does, or it would read them
//     again once it reads on;
//  2. none while a reader is in a loaded block (hungry, or busy within its
//     patience): it reads on and frees its block, or its patience ends (the
//     time is returned, at most the patience from now), so waiting cannot
//     last; a reader that waits for the rest of a block it has read all
//     of is not in it;
//  3. otherwise every hungry reader is between blocks: the loaded block
//     furthest ahead of lo goes, so that the readers furthest behind load
//     theirs first and the others meet them at the blocks still loaded. A
//     load for a block ahead of every loaded one waits, and the waiters
//     behind are poked to go first.
//
// So a block is dropped before every reader that will reach it has read it
// only in case 3, when the readers behind it have no block to read at all.
func (c *catchUp) admitLocked(lo int64, extending *block) (bool, time.Time) {
	var now, retryAt time.Time
	for {
		others := len(c.blocks)
		if extending != nil {
			others--
		}
		if others == 0 {
			return true, time.Time{}
		}
		if !c.sized && c.loading > 0 {
			// A block's size is not known yet (the first loads after the
			// queue starts): one load at a time, or the domains behind in
			// different blocks would all load theirs at once, whatever the
			// bound. The load's end pokes the waiters.
			return false, time.Time{}
		}
		if c.size()+(c.loading+1)*c.estimate <= c.maxBytes {
			return true, time.Time{}
		}
		if now.IsZero() {
			now = c.clock.Now()
		}
		patienceEnds := c.expireBusyLocked(now)
		// The lowest block a reader that holds blocks needs.
		behind := int64(-1)
		for _, m := range []map[int64]int{c.hungry, c.busy} {
			for need := range m {
				if behind < 0 || need < behind {
					behind = need
				}
			}
		}
		// A waiter for the rest of a block has read all it holds: it does
		// not hold the block, or two such readers would wait for each
		// other's block for ever.
		var past map[int64]int
		for r, at := range c.extending {
			if _, waits := c.waiters[r]; !waits || r.need != at {
				delete(c.extending, r)
				continue
			}
			if past == nil {
				past = make(map[int64]int)
			}
			past[at]++
		}
		var free, ahead *block
		held, hungryHeld := c.loading > 0, false
		for _, b := range c.blocks {
			if b == extending || !b.loaded() {
				continue
			}
			if b.err == nil && c.hungry[b.lo] > past[b.lo] {
				held, hungryHeld = true, true
				continue
			}
			if b.err == nil && c.busy[b.lo] > 0 {
				// Held until the first patience ends at the latest: a
				// reader dropped then may free this block or those after.
				retryAt, held = patienceEnds, true
				continue
			}
			if b.err != nil || behind < 0 || behind > b.lo {
				if free == nil || b.used < free.used {
					free = b
				}
			} else if b.lo > lo && (ahead == nil || b.lo > ahead.lo) {
				ahead = b
			}
		}
		switch {
		case free != nil:
			c.dropLocked(free)
		case held:
			if retryAt.IsZero() && hungryHeld {
				// A hungry reader frees its block when it reads on, and
				// pokes the waiters; but it may turn busy instead, and
				// hold the block for its patience: the waiters try again
				// after that at the latest (a poke to every waiter each
				// time a reader turns busy costs more than it saves).
				retryAt = c.clock.Now().Add(c.patience)
			}
			return false, retryAt
		case ahead != nil:
			c.dropLocked(ahead)
		default:
			c.pokeBehindLocked(lo)
			// Blocks kept for a busy reader behind them come free when it
			// reads on or leaves (it pokes), or when its patience ends.
			return false, patienceEnds
		}
	}
}

// pokeBehindLocked wakes the waiters that need a block before lo.
func (c *catchUp) pokeBehindLocked(lo int64) {
	for r := range c.waiters {
		if r.need < lo {
			r.w.poke()
			delete(c.waiters, r)
		}
	}
}

// expireBusyLocked drops the busy readers whose patience ran out by now,
// and returns when the first of the others' ends at the earliest (zero if
// none is left).
func (c *catchUp) expireBusyLocked(now time.Time) time.Time {
	if c.patienceEnds.IsZero() || c.patienceEnds.After(now) {
		// Nobody's patience ran out: no need to look at every reader
		// (admitLocked runs each time a waiter is refused).
		return c.patienceEnds
	}
	var first time.Time
	for _, r := range c.readers {
		if r.state != readerBusy || r.dropped {
			continue
		}
		if end := r.since.Add(c.patience); end.After(now) {
			if first.IsZero() || end.Before(first) {
				first = end
			}
			continue
		}
		c.count(r, -1)
		r.dropped = true
		r.state = readerStalled
	}
	c.patienceEnds = first
	return first
}

// load reads b's activities from the store (after prev's, whose entries it
// takes over, if prev is set).
func (c *catchUp) load(ctx context.Context, b, prev *block) {
	from := b.lo
	if prev != nil {
		from = prev.hi
	}
	callCtx, cancel := storeCall(ctx, c.timeout)
	acts, err := c.store.Activities(callCtx, from, int(b.hi-from))
	cancel()
	idx := newLogIndex()
	bytes := 0
	if err == nil {
		if prev != nil {
			for _, e := range prev.idx.entries {
				idx.push(e)
			}
			bytes = prev.bytes
		}
		for _, a := range acts {
			if a.ID > b.hi {
				break
			}
			e := newEntry(a)
			idx.push(e)
			bytes += e.footprint()
		}
	}
	c.mu.Lock()
	defer close(b.ready)
	defer c.mu.Unlock()
	b.stopped = err != nil && ctx.Err() != nil
	if c.blocks[b.lo] != b {
		b.err = errors.Join(err, errCatchUpReset)
		return // reset meanwhile
	}
	c.loading--
	// Whoever was refused room may find some now, or wants this block.
	defer c.pokeWaitersLocked()
	if err != nil {
		b.err = err
		if prev != nil {
			// Keep what was loaded: only the rest is read again.
			c.blocks[b.lo] = prev
			c.bytes.Add(int64(prev.bytes))
		}
		return
	}
	b.idx, b.bytes = idx, bytes
	c.bytes.Add(int64(bytes))
	if b.hi-b.lo == c.span {
		c.estimate, c.sized = bytes, true
	}
}

var errCatchUpReset = errors.New("the queue restarted while the block loaded")

// dropLocked forgets a block. Caller holds c.mu.
func (c *catchUp) dropLocked(b *block) {
	if c.blocks[b.lo] == b {
		delete(c.blocks, b.lo)
		c.bytes.Add(-int64(b.bytes))
	}
}

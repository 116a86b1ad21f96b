package queue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/apqueue/apqueue/store"
)

// catchUp serves the domains that are behind the shared window, for
// example after a restart: it reads the log in blocks of fixed ID ranges,
// each read once from the store however many domains need it, indexed by
// domain like the window, and kept while memory allows (least recently used
// blocks go first). Domains behind in the same part of the log, as after a
// restart, share every read.
type catchUp struct {
	store    store.Store
	span     int64 // IDs per block
	maxBytes int

	mu     sync.Mutex
	blocks map[int64]*block // by first ID - 1 (a multiple of span)
	bytes  atomic.Int64     // loaded blocks' footprints
	clock  uint64           // for least-recently-used eviction
}

// block holds every activity of the log in (lo, hi].
type block struct {
	lo, hi int64
	ready  chan struct{} // closed once loaded (or failed)
	err    error
	idx    logIndex
	bytes  int
	used   uint64
}

func newCatchUp(st store.Store, span, maxBytes int) *catchUp {
	return &catchUp{store: st, span: int64(span), maxBytes: maxBytes, blocks: make(map[int64]*block)}
}

// size returns the memory the loaded blocks hold.
func (c *catchUp) size() int { return int(c.bytes.Load()) }

// reset drops every block.
func (c *catchUp) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.blocks)
	c.bytes.Store(0)
}

// read returns up to limit activities addressed to dom after the given ID,
// from the block that holds the next ID, and the ID up to which the log has
// been scanned for dom. base is the window's base: activities above it come
// from the window, and every activity at or below it has committed.
func (c *catchUp) read(ctx context.Context, dom string, after int64, limit int, base int64) ([]*entry, int64, error) {
	b, err := c.block(ctx, after, base)
	if err != nil {
		return nil, after, err
	}
	entries := b.idx.addressed(dom, after, limit)
	if len(entries) == limit {
		return entries, entries[limit-1].act.ID, nil
	}
	return entries, b.hi, nil
}

// block returns the loaded block that holds after+1, loading it (once,
// whoever asks meanwhile) if needed.
func (c *catchUp) block(ctx context.Context, after, base int64) (*block, error) {
	for {
		b, err := c.blockOnce(ctx, after, base)
		if err != nil && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			// The worker that loaded it was stopped, not this one: load it
			// again rather than back off for another domain's reason.
			continue
		}
		return b, err
	}
}

func (c *catchUp) blockOnce(ctx context.Context, after, base int64) (*block, error) {
	lo := after - after%c.span
	c.mu.Lock()
	b, ok := c.blocks[lo]
	if ok {
		select {
		case <-b.ready:
			// A block loaded while the window's base was lower ends early:
			// past its end, load it again up to the new base.
			if b.err != nil || b.hi <= after {
				c.dropLocked(b)
				ok = false
			}
		default:
		}
	}
	if !ok {
		b = &block{lo: lo, hi: min(lo+c.span, base), ready: make(chan struct{})}
		c.blocks[lo] = b
		c.mu.Unlock()
		c.load(ctx, b)
		c.mu.Lock()
	}
	c.clock++
	b.used = c.clock
	c.mu.Unlock()

	select {
	case <-b.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return b, b.err
}

// load reads b's activities from the store and evicts the least recently
// used blocks beyond the memory bound.
func (c *catchUp) load(ctx context.Context, b *block) {
	defer close(b.ready)
	acts, err := c.store.Activities(ctx, b.lo, int(c.span))
	if err != nil {
		b.err = err
		return
	}
	b.idx = newLogIndex()
	for _, a := range acts {
		if a.ID > b.hi {
			break
		}
		e := newEntry(a)
		b.idx.push(e)
		b.bytes += e.footprint()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.blocks[b.lo] != b {
		return // reset meanwhile
	}
	c.bytes.Add(int64(b.bytes))
	for c.size() > c.maxBytes {
		var oldest *block
		for _, o := range c.blocks {
			select {
			case <-o.ready:
			default:
				continue // still loading
			}
			if o != b && (oldest == nil || o.used < oldest.used) {
				oldest = o
			}
		}
		if oldest == nil {
			break
		}
		c.dropLocked(oldest)
	}
}

// dropLocked forgets a loaded block. Caller holds c.mu.
func (c *catchUp) dropLocked(b *block) {
	if c.blocks[b.lo] == b {
		delete(c.blocks, b.lo)
		c.bytes.Add(-int64(b.bytes))
	}
}

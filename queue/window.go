package queue

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/store"
)

// entry is one activity of the log as this process's workers see it: the
// stored activity, the payload shared by all its deliveries (so its digest is
// computed once), and its explicit inboxes grouped by domain.
type entry struct {
	act      store.Activity
	payload  *sender.Activity
	byDomain map[string][]string
}

func newEntry(a store.Activity) *entry {
	e := &entry{
		act:     a,
		payload: &sender.Activity{ID: a.ID, Actor: a.Actor, Body: a.Body},
	}
	if len(a.Inboxes) > 0 {
		e.byDomain = make(map[string][]string, len(a.Domains))
		for _, inbox := range a.Inboxes {
			d := domainOf(inbox)
			e.byDomain[d] = append(e.byDomain[d], inbox)
		}
	}
	return e
}

// footprint approximates the memory an entry holds: its body, its inboxes
// twice (the activity's list and the per-domain index), and fixed overheads.
func (e *entry) footprint() int {
	n := 512 + len(e.act.Body) + len(e.act.Actor) + len(e.act.OrderingKey)
	for _, in := range e.act.Inboxes {
		n += 2*len(in) + 96
	}
	for _, a := range e.act.Audiences {
		n += len(a) + 16
	}
	return n
}

// window is the per-process shared view of the newest part of the activity
// log. One read of the store serves every domain that is caught up; a domain
// that is further behind than the window reads the store itself, in batches.
// Its memory is bounded by its size in entries and in bytes, not by the
// backlog.
type window struct {
	store    store.Store
	batch    int
	size     int // entries kept at most
	maxBytes int // approximate bytes kept at most (entries' footprints)
	logger   *slog.Logger
	// arrived, if set, is called with the activities each refresh adds.
	arrived func([]store.Activity)

	mu      sync.RWMutex // read by every worker, written by refresh
	entries []*entry     // ascending IDs; together they are every activity in (base, head]
	bytes   int          // sum of the entries' footprints
	base    int64
	head    int64
	moved   chan struct{} // closed when head advances
	kick    chan struct{} // a refresh is wanted
}

func newWindow(st store.Store, batch, size, maxBytes int, logger *slog.Logger) *window {
	return &window{store: st, batch: batch, size: size, maxBytes: maxBytes, logger: logger, moved: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// init places the window at the log's current head.
func (w *window) init(ctx context.Context) error {
	head, err := w.store.Head(ctx)
	if err != nil {
		return fmt.Errorf("reading log head: %w", err)
	}
	w.mu.Lock()
	// A restarted queue forgets what it held: activities appended while it
	// was stopped are not in it.
	clear(w.entries)
	w.entries = nil
	w.bytes = 0
	w.base, w.head = head, head
	w.mu.Unlock()
	return nil
}

// wake asks for a refresh without blocking; wake-ups coalesce.
func (w *window) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// run refreshes the window whenever woken and at least every poll interval,
// until ctx ends.
func (w *window) run(ctx context.Context, poll time.Duration) {
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-ticker.C:
		}
		if err := w.refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			w.logger.WarnContext(ctx, "apqueue: reading the activity log failed", slog.Any("error", err), slog.Int("attempt", failures))
			// Retry on the next tick or wake-up; the ticker bounds the rate.
			continue
		}
		failures = 0
	}
}

// refresh reads every activity after the head into the window.
func (w *window) refresh(ctx context.Context) error {
	for {
		w.mu.Lock()
		head := w.head
		w.mu.Unlock()
		acts, err := w.store.Activities(ctx, head, w.batch)
		if err != nil {
			return err
		}
		if len(acts) == 0 {
			return nil
		}
		w.append(acts)
		if w.arrived != nil {
			w.arrived(acts)
		}
		if len(acts) < w.batch {
			return nil
		}
	}
}

func (w *window) append(acts []store.Activity) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range acts {
		if a.ID <= w.head {
			continue
		}
		e := newEntry(a)
		w.entries = append(w.entries, e)
		w.bytes += e.footprint()
		w.head = a.ID
	}
	// Drop the oldest entries beyond either bound (keeping the newest one
	// however large); domains that still need them read the store.
	over := 0
	for over < len(w.entries)-1 && (len(w.entries)-over > w.size || w.bytes > w.maxBytes) {
		w.bytes -= w.entries[over].footprint()
		over++
	}
	if over > 0 {
		w.base = max(w.base, w.entries[over-1].act.ID)
		clear(w.entries[:over])
		w.entries = append(w.entries[:0:0], w.entries[over:]...)
	}
	close(w.moved)
	w.moved = make(chan struct{})
}

// read returns up to limit activities after the given ID and the ID up to
// which the log has been scanned (every activity at or below it that exists
// was returned or is at or below after). When the caller is caught up, it
// returns no entries and a channel that is closed when more arrive.
func (w *window) read(ctx context.Context, after int64, limit int) ([]*entry, int64, <-chan struct{}, error) {
	w.mu.RLock()
	if after >= w.head {
		moved := w.moved
		w.mu.RUnlock()
		return nil, after, moved, nil
	}
	if after >= w.base {
		i := sort.Search(len(w.entries), func(i int) bool { return w.entries[i].act.ID > after })
		j := min(i+limit, len(w.entries))
		out := append([]*entry(nil), w.entries[i:j]...)
		scanned := w.head
		if j < len(w.entries) {
			scanned = w.entries[j-1].act.ID
		}
		w.mu.RUnlock()
		return out, scanned, nil, nil
	}
	base := w.base
	w.mu.RUnlock()

	// Behind the window: read the store directly.
	acts, err := w.store.Activities(ctx, after, limit)
	if err != nil {
		return nil, after, nil, fmt.Errorf("reading activities after %d: %w", after, err)
	}
	out := make([]*entry, len(acts))
	for i, a := range acts {
		out[i] = newEntry(a)
	}
	scanned := after
	if len(acts) > 0 {
		scanned = acts[len(acts)-1].ID
	}
	if len(acts) < limit {
		// The store returned all it had up to its head, which had reached
		// base before this read began (the window read up to base earlier,
		// and a store's head never moves back): nothing else exists up to
		// base, and the window serves what follows.
		scanned = max(scanned, base)
	}
	return out, scanned, nil, nil
}

package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/apqueue/apqueue/store"
)

// SQLite has no LISTEN/NOTIFY. Listen therefore combines two sources:
//
//   - Append on this Store notifies every Listen call on this Store as soon
//     as it has committed, so queues of one process that share a Store wake
//     each other at once (the appending queue wakes its own workers anyway);
//   - every Config.ListenInterval, Listen reads the ID counter (one small
//     read of a page that SQLite keeps cached until a writer changes it)
//     and notifies when it moved: that is how appends of other processes,
//     and commits of callers' transactions that appended through Tx, are
//     noticed.
//
// The read costs a statement per interval per listening queue (ten a
// second by default), counted in Stats; a negative ListenInterval turns it
// off and leaves other processes' appends to the queue's PollInterval.

type listener struct {
	notify func()
}

// Listen implements store.Store: see above. It returns ctx.Err() when ctx
// ends, store.ErrNotifyUnsupported at once when Config.ListenInterval is
// negative, and an error when it cannot read the counter.
func (s *Store) Listen(ctx context.Context, notify func()) error {
	const op = "listen"
	if notify == nil {
		return invalid(op, "nil notify")
	}
	if s.listenInterval < 0 {
		return fmt.Errorf("sqlite: %s: ListenInterval is negative: %w", op, store.ErrNotifyUnsupported)
	}
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	l := &listener{notify: notify}
	s.mu.Lock()
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	last, err := s.head(ctx)
	if err != nil {
		return s.fail(ctx, op, err)
	}
	// An append may have committed between the caller's last read and this
	// first one, unseen by either: wake the caller once to read again.
	notify()
	ticker := time.NewTicker(s.listenInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		h, err := s.head(ctx)
		if err != nil {
			return s.fail(ctx, op, err)
		}
		if h != last {
			last = h
			notify()
		}
	}
}

// notifyListeners calls every Listen call's notify, with no lock held.
func (s *Store) notifyListeners() {
	s.mu.Lock()
	ls := make([]*listener, 0, len(s.listeners))
	for l := range s.listeners {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	for _, l := range ls {
		l.notify()
	}
}

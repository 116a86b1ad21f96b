package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/apqueue/apqueue/store"
)

// SQLite has no LISTEN/NOTIFY. Listen therefore combines three sources:
//
//   - Append on this Store notifies every Listen call on this Store as soon
//     as it has committed, so queues of one process that share a Store wake
//     each other at once (the appending queue wakes its own workers anyway);
//   - AppendTx on this Store cannot know when the caller commits, so it
//     makes the Listen calls read the ID counter every commitPoll until its
//     IDs are visible (or commitWatch has passed: the transaction may have
//     rolled back), and the commit wakes them within milliseconds;
//   - every Config.ListenInterval, Listen reads the ID counter (one small
//     read of a page that SQLite keeps cached until a writer changes it)
//     and notifies when it moved: that is how appends of other processes,
//     and their callers' commits, are noticed.
//
// A read costs a statement, counted in Stats: ten a second per listening
// queue by default, up to one every commitPoll while a transaction that
// appended through this Store is open. A negative ListenInterval turns
// Listen off and leaves other processes' appends, and commits, to the
// queue's PollInterval.

// commitPoll is how often Listen reads the counter while a caller's
// transaction that appended through this Store may still commit, and
// commitWatch how long after the append it keeps doing so.
const (
	commitPoll  = 2 * time.Millisecond
	commitWatch = time.Second
)

type listener struct {
	notify func()
	// kick makes the Listen call read the counter at once (see txAppended).
	kick chan struct{}
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
	l := &listener{notify: notify, kick: make(chan struct{}, 1)}
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
	timer := time.NewTimer(s.listenInterval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		case <-l.kick:
		}
		h, err := s.head(ctx)
		if err != nil {
			return s.fail(ctx, op, err)
		}
		if h != last {
			last = h
			notify()
		}
		next := s.listenInterval
		if h < s.txPendingID.Load() && time.Since(time.Unix(0, s.txPendingAt.Load())) < commitWatch {
			next = commitPoll
		}
		timer.Reset(next)
	}
}

// txAppended records that AppendTx handed out IDs up to last in a caller's
// transaction, and makes the Listen calls watch for its commit.
func (s *Store) txAppended(last int64) {
	for {
		cur := s.txPendingID.Load()
		if last <= cur || s.txPendingID.CompareAndSwap(cur, last) {
			break
		}
	}
	s.txPendingAt.Store(time.Now().UnixNano())
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range s.listeners {
		select {
		case l.kick <- struct{}{}:
		default:
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

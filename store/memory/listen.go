package memory

import (
	"context"
	"fmt"

	"github.com/apqueue/apqueue/store"
)

type listener struct {
	notify func()
}

// Listen implements store.Store: notify is called after every Append to this
// Store, from the appending goroutine and with no lock held, until ctx ends.
func (s *Store) Listen(ctx context.Context, notify func()) error {
	if notify == nil {
		return fmt.Errorf("memory: listen: nil notify: %w", store.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	l := &listener{notify: notify}
	s.mu.Lock()
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
	return ctx.Err()
}

// listenersLocked returns the current listeners, to be notified once the
// lock is released.
func (s *Store) listenersLocked() []*listener {
	if len(s.listeners) == 0 {
		return nil
	}
	out := make([]*listener, 0, len(s.listeners))
	for l := range s.listeners {
		out = append(out, l)
	}
	return out
}

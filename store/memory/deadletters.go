package memory

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/apqueue/apqueue/store"
)

// DeadLetters implements store.Store.
func (s *Store) DeadLetters(ctx context.Context, filter store.DeadLetterFilter) ([]store.DeadLetter, error) {
	const op = "read dead letters"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	limit, err := filter.EffectiveLimit()
	if err != nil {
		return nil, refused(op, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.DeadLetter
	// s.deadLetters is in ID order, which is the order they were recorded.
	for _, dl := range s.deadLetters {
		if len(out) == limit {
			break
		}
		if dl.ID <= filter.AfterID || (filter.Domain != "" && dl.Domain != filter.Domain) ||
			(filter.ActivityID != 0 && dl.ActivityID != filter.ActivityID) ||
			(filter.IDs != nil && !slices.Contains(filter.IDs, dl.ID)) {
			continue
		}
		dl.Body = slices.Clone(dl.Body)
		out = append(out, dl)
	}
	return out, nil
}

// DeleteDeadLetters implements store.Store.
func (s *Store) DeleteDeadLetters(ctx context.Context, ids []int64) (int, error) {
	if err := checkCtx(ctx, "delete dead letters"); err != nil {
		return 0, err
	}
	del := make(map[int64]bool, len(ids))
	for _, id := range ids {
		del[id] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.deadLetters)
	s.deadLetters = slices.DeleteFunc(s.deadLetters, func(dl store.DeadLetter) bool {
		if del[dl.ID] {
			delete(s.deadKeys, keyOf(dl))
			return true
		}
		return false
	})
	return n - len(s.deadLetters), nil
}

// PruneDeadLetters implements store.DeadLetterPruner.
func (s *Store) PruneDeadLetters(ctx context.Context, olderThan time.Time, perDomain int) (int, error) {
	const op = "prune dead letters"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	if perDomain < 0 {
		return 0, fmt.Errorf("memory: %s: negative cap per domain %d: %w", op, perDomain, store.ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.deadLetters)
	if !olderThan.IsZero() {
		s.deadLetters = slices.DeleteFunc(s.deadLetters, func(dl store.DeadLetter) bool { return dl.CreatedAt.Before(olderThan) })
	}
	if perDomain > 0 {
		// s.deadLetters is in ID order: keep the newest perDomain of each
		// domain, counting from the end.
		kept := make(map[string]int)
		keep := make([]bool, len(s.deadLetters))
		for i := len(s.deadLetters) - 1; i >= 0; i-- {
			d := s.deadLetters[i].Domain
			keep[i] = kept[d] < perDomain
			kept[d]++
		}
		out := s.deadLetters[:0]
		for i, dl := range s.deadLetters {
			if keep[i] {
				out = append(out, dl)
			}
		}
		clear(s.deadLetters[len(out):])
		s.deadLetters = out
	}
	return n - len(s.deadLetters), nil
}

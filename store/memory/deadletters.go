package memory

import (
	"context"
	"slices"

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

package memory

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/apqueue/apqueue/store"
)

// Append implements store.Store. New domains start with their cursor at the
// head before the batch, so every activity of the batch is ahead of them.
func (s *Store) Append(ctx context.Context, activities []store.NewActivity) ([]store.Appended, error) {
	const op = "append"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if err := store.CheckAppend(activities); err != nil {
		return nil, refused(op, err)
	}

	s.mu.Lock()
	now := s.timeNow()
	before := s.head
	res := make([]store.Appended, len(activities))
	for i, a := range activities {
		if a.IdempotencyKey != "" {
			if k, ok := s.keys[a.IdempotencyKey]; ok && now.Before(k.expiresAt) {
				res[i] = store.Appended{ID: k.id, Duplicate: true}
				continue
			}
		}
		s.head++
		res[i].ID = s.head
		if a.IdempotencyKey != "" {
			s.keys[a.IdempotencyKey] = idempotencyKey{id: s.head, expiresAt: now.Add(a.IdempotencyWindow)}
		}
		s.log = append(s.log, store.Activity{
			ID:          s.head,
			EnqueuedAt:  now,
			Actor:       a.Actor,
			OrderingKey: a.OrderingKey,
			Body:        slices.Clone(a.Body),
			Inboxes:     slices.Clone(a.Inboxes),
			Domains:     slices.Clone(a.Domains),
			Audiences:   slices.Clone(a.Audiences),
			AllDomains:  a.AllDomains,
		})
		for _, d := range a.Domains {
			if st := s.domains[d]; st != nil && st.Status == store.StatusSuspended {
				res[i].Suspended = append(res[i].Suspended, d)
			}
			s.registerLocked(d, before)
		}
	}
	notify := s.listenersLocked()
	s.mu.Unlock()

	for _, l := range notify {
		l.notify()
	}
	return res, nil
}

// Activities implements store.Store.
func (s *Store) Activities(ctx context.Context, after int64, limit int) ([]store.Activity, error) {
	const op = "read activities"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if err := store.CheckBatchSize(limit); err != nil {
		return nil, refused(op, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.indexAfterLocked(after)
	n := min(limit, len(s.log)-i)
	out := make([]store.Activity, n)
	for j := range n {
		out[j] = cloneActivity(s.log[i+j])
	}
	return out, nil
}

// Head implements store.Store.
func (s *Store) Head(ctx context.Context) (int64, error) {
	if err := checkCtx(ctx, "read head"); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head, nil
}

// Prune implements store.Store. The activities kept are copied into a new
// slice, so the memory of the pruned ones is released.
func (s *Store) Prune(ctx context.Context) (store.PruneResult, error) {
	if err := checkCtx(ctx, "prune"); err != nil {
		return store.PruneResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	below := s.head
	for _, d := range s.domains {
		if d.Status != store.StatusDead && d.Status != store.StatusSuspended && d.Cursor < below {
			below = d.Cursor
		}
	}
	below = max(below, 0)

	var res store.PruneResult
	res.Below = below
	for _, d := range s.domains {
		if (d.Status == store.StatusDead || d.Status == store.StatusSuspended) && d.Cursor < below {
			if d.Status == store.StatusDead {
				res.FastForwarded = append(res.FastForwarded, store.FastForward{Domain: d.Domain, From: d.Cursor, To: below})
			}
			d.Cursor = below
			d.Revision++
			s.touched(d)
		}
	}
	sort.Slice(res.FastForwarded, func(i, j int) bool {
		return res.FastForwarded[i].Domain < res.FastForwarded[j].Domain
	})

	now := s.timeNow()
	for k, v := range s.keys {
		if !now.Before(v.expiresAt) {
			delete(s.keys, k)
			res.ExpiredKeys++
		}
	}

	i := s.indexAfterLocked(below)
	if i > 0 {
		res.Deleted = int64(i)
		// A fresh slice, so that the pruned activities' bodies can be freed.
		s.log = slices.Clone(s.log[i:])
	}
	return res, nil
}

// indexAfterLocked returns the index in s.log of the first activity with an
// ID greater than after.
func (s *Store) indexAfterLocked(after int64) int {
	return sort.Search(len(s.log), func(i int) bool { return s.log[i].ID > after })
}

// idempotencyKey is what the store remembers of an activity's idempotency
// key: the activity's ID, until expiresAt.
type idempotencyKey struct {
	id        int64
	expiresAt time.Time
}

func cloneActivity(a store.Activity) store.Activity {
	a.Body = slices.Clone(a.Body)
	a.Inboxes = slices.Clone(a.Inboxes)
	a.Domains = slices.Clone(a.Domains)
	a.Audiences = slices.Clone(a.Audiences)
	return a
}

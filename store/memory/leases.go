package memory

import (
	"context"
	"sort"
	"time"

	"github.com/apqueue/apqueue/store"
)

// live reports whether d has a lease that has not expired at now.
func live(d *store.DomainState, now time.Time) bool {
	return d.Owner != "" && now.Before(d.LeaseExpiresAt)
}

// AcquireLeases implements store.Store.
func (s *Store) AcquireLeases(ctx context.Context, owner string, ttl time.Duration, limit int) ([]store.DomainState, error) {
	const op = "acquire leases"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if err := store.CheckLease(owner, ttl); err != nil {
		return nil, refused(op, err)
	}
	if err := store.CheckLimit(limit); err != nil {
		return nil, refused(op, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.timeNow()
	s.heartbeat(owner, now.Add(ttl))
	var free []*store.DomainState
	for _, d := range s.domains {
		if !live(d, now) {
			free = append(free, d)
		}
	}
	sort.Slice(free, func(i, j int) bool {
		if free[i].Cursor != free[j].Cursor {
			return free[i].Cursor < free[j].Cursor
		}
		return free[i].Domain < free[j].Domain
	})
	free = free[:min(limit, len(free))]
	out := make([]store.DomainState, len(free))
	for i, d := range free {
		// The previous owner, this one included, must learn that the
		// lease it let expire is gone.
		s.touched(d)
		s.unfollow(d)
		d.Owner = owner
		d.LeaseToken++
		d.LeaseExpiresAt = truncate(now.Add(ttl))
		out[i] = copyState(d)
	}
	return out, nil
}

// RenewLeases implements store.Store.
func (s *Store) RenewLeases(ctx context.Context, owner string, leases []store.Lease, ttl time.Duration) ([]store.Lease, error) {
	const op = "renew leases"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if err := store.CheckLease(owner, ttl); err != nil {
		return nil, refused(op, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.timeNow()
	s.heartbeat(owner, now.Add(ttl))
	out := make([]store.Lease, 0, len(leases))
	for _, l := range leases {
		d, ok := s.domains[l.Domain]
		if !ok || d.Owner != owner || d.LeaseToken != l.Token {
			continue
		}
		d.LeaseExpiresAt = truncate(now.Add(ttl))
		d.Cursor = max(d.Cursor, l.SettledThrough)
		out = append(out, d.Lease())
	}
	return out, nil
}

// ReleaseLeases implements store.Store. The token is kept, so the next
// acquisition still increments it.
func (s *Store) ReleaseLeases(ctx context.Context, owner string, leases []store.Lease) error {
	const op = "release leases"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := store.CheckOwner(owner); err != nil {
		return refused(op, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range leases {
		d, ok := s.domains[l.Domain]
		if !ok || d.Owner != owner || d.LeaseToken != l.Token {
			continue
		}
		s.unfollow(d)
		d.Owner = ""
		d.LeaseExpiresAt = time.Time{}
	}
	// An owner shedding part of its domains stays live; one that gave back
	// its last lease is leaving.
	now := s.timeNow()
	for _, d := range s.domains {
		if d.Owner == owner && live(d, now) {
			return nil
		}
	}
	delete(s.owners, owner)
	return nil
}

// LeaseStats implements store.Store.
func (s *Store) LeaseStats(ctx context.Context) (store.LeaseStats, error) {
	if err := checkCtx(ctx, "lease stats"); err != nil {
		return store.LeaseStats{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.timeNow()
	owners := make(map[string]struct{})
	for _, d := range s.domains {
		if live(d, now) {
			owners[d.Owner] = struct{}{}
		}
	}
	for o, until := range s.owners {
		if now.Before(until) {
			owners[o] = struct{}{}
		} else {
			delete(s.owners, o)
		}
	}
	return store.LeaseStats{Domains: len(s.domains), Owners: len(owners)}, nil
}

// heartbeat records that owner is live until the given time. Caller holds
// s.mu.
func (s *Store) heartbeat(owner string, until time.Time) {
	if s.owners == nil {
		s.owners = make(map[string]time.Time)
	}
	if until.After(s.owners[owner]) {
		s.owners[owner] = until
	}
}

package memory

import (
	"context"
	"time"

	"github.com/apqueue/apqueue/store"
)

var _ store.LeaseKeeper = (*Store)(nil)

// KeepLeases implements store.LeaseKeeper. A lease given to it follows its
// owner from then on: every later call of the owner renews it, listed or
// not, until a Full call leaves it out or the lease ends.
func (s *Store) KeepLeases(ctx context.Context, owner string, keep store.LeaseKeep, ttl time.Duration) (store.LeaseKept, error) {
	const op = "keep leases"
	if err := checkCtx(ctx, op); err != nil {
		return store.LeaseKept{}, err
	}
	if err := store.CheckLease(owner, ttl); err != nil {
		return store.LeaseKept{}, refused(op, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.timeNow()
	s.heartbeat(owner, now.Add(ttl))
	until := truncate(now.Add(ttl))
	out := store.LeaseKept{Mark: s.marks[owner]}
	out.Changed = !keep.Full && out.Mark != keep.Since
	follows := s.follows[owner]
	if follows == nil {
		follows = make(map[string]int64)
		if s.follows == nil {
			s.follows = make(map[string]map[string]int64)
		}
		s.follows[owner] = follows
	}
	if keep.Full {
		clear(follows) // the listed ones follow again below
	}
	for dom, token := range follows {
		d, ok := s.domains[dom]
		if !ok || d.Owner != owner || d.LeaseToken != token {
			delete(follows, dom)
			continue
		}
		d.LeaseExpiresAt = until
	}
	out.Leases = make([]store.Lease, 0, len(keep.Leases))
	for _, l := range keep.Leases {
		d, ok := s.domains[l.Domain]
		if !ok || d.Owner != owner || d.LeaseToken != l.Token {
			continue
		}
		d.LeaseExpiresAt = until
		d.Cursor = max(d.Cursor, l.SettledThrough)
		follows[l.Domain] = l.Token
		out.Leases = append(out.Leases, d.Lease())
	}
	return out, nil
}

// touched records that something happened to d that its lease's owner
// must learn of (see store.LeaseKeeper): the owner's change mark moves on.
// Caller holds s.mu.
func (s *Store) touched(d *store.DomainState) {
	if d.Owner == "" {
		return
	}
	if s.marks == nil {
		s.marks = make(map[string]int64)
	}
	s.markSeq++
	s.marks[d.Owner] = s.markSeq
}

// unfollow ends what KeepLeases knows of d's lease, which its owner no
// longer holds. Caller holds s.mu.
func (s *Store) unfollow(d *store.DomainState) {
	if f := s.follows[d.Owner]; f != nil {
		delete(f, d.Domain)
	}
}

package memory

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/apqueue/apqueue/store"
)

// RegisterDomains implements store.Store.
func (s *Store) RegisterDomains(ctx context.Context, domains []store.DomainRegistration) error {
	const op = "register domains"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := store.CheckRegistrations(domains); err != nil {
		return refused(op, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range domains {
		d := s.registerLocked(r.Domain, s.head)
		if r.SharedInbox != "" && r.SharedInbox != d.SharedInbox {
			d.SharedInbox = r.SharedInbox
			d.Revision++
			s.touched(d)
		}
	}
	return nil
}

// registerLocked returns the state of domain, adding it, active and with its
// cursor at cursor, when it is not known yet.
func (s *Store) registerLocked(domain string, cursor int64) *store.DomainState {
	d, ok := s.domains[domain]
	if !ok {
		d = &store.DomainState{Domain: domain, Cursor: cursor, Status: store.StatusActive, LeaseToken: s.forgottenTokens[domain]}
		delete(s.forgottenTokens, domain)
		s.domains[domain] = d
	}
	return d
}

// Domains implements store.Store.
func (s *Store) Domains(ctx context.Context, names []string) ([]store.DomainState, error) {
	if err := checkCtx(ctx, "read domains"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.DomainState
	if len(names) == 0 {
		out = make([]store.DomainState, 0, len(s.domains))
		for _, d := range s.domains {
			out = append(out, copyState(d))
		}
	} else {
		names = slices.Clone(names)
		slices.Sort(names)
		names = slices.Compact(names)
		out = make([]store.DomainState, 0, len(names))
		for _, n := range names {
			if d, ok := s.domains[n]; ok {
				out = append(out, copyState(d))
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out, nil
}

// Checkpoint implements store.Store. A state is saved only when its Owner
// holds the domain's lease with its LeaseToken (expired or not: a lease is
// lost only when another owner acquires it or the owner releases it).
func (s *Store) Checkpoint(ctx context.Context, states []store.DomainState, deadLetters []store.DeadLetter) error {
	const op = "checkpoint"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := store.CheckCheckpoint(states, deadLetters); err != nil {
		return refused(op, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	refused := make(map[string]bool)
	var stale []string
	for _, st := range states {
		d, ok := s.domains[st.Domain]
		if !ok || st.Owner == "" || d.Owner != st.Owner || d.LeaseToken != st.LeaseToken {
			refused[st.Domain] = true
		} else if d.Revision != st.Revision {
			stale = append(stale, st.Domain)
			refused[st.Domain] = true
		}
	}
	for _, st := range states {
		if refused[st.Domain] {
			continue
		}
		d := s.domains[st.Domain]
		d.Cursor = max(d.Cursor, st.Cursor) // never backwards
		d.Progress = st.Progress.Clone()
		d.Status = st.Status
		d.FailCount = st.FailCount
		d.FailingSince = truncate(st.FailingSince)
		d.NextAttemptAt = truncate(st.NextAttemptAt)
		d.LastStatus = st.LastStatus
		d.LastError = st.LastError
		d.LastSuccessAt = truncate(st.LastSuccessAt)
		d.SignatureScheme = st.SignatureScheme
		d.SignatureCheckedAt = truncate(st.SignatureCheckedAt)
	}
	now := s.timeNow()
	for _, dl := range deadLetters {
		if refused[dl.Domain] || s.recorded(dl) {
			continue
		}
		s.lastDeadID++
		dl.ID = s.lastDeadID
		dl.Body = slices.Clone(dl.Body)
		if dl.CreatedAt.IsZero() {
			dl.CreatedAt = now
		} else {
			dl.CreatedAt = truncate(dl.CreatedAt)
		}
		s.deadLetters = append(s.deadLetters, dl)
		s.deadKeys[keyOf(dl)] = true
	}
	var lost []string
	for d := range refused {
		if !slices.Contains(stale, d) {
			lost = append(lost, d)
		}
	}
	return store.CheckpointRefused(lost, stale)
}

// ChangeDomain implements store.Store.
func (s *Store) ChangeDomain(ctx context.Context, domain string, change store.DomainChange) (store.DomainState, error) {
	const op = "change domain"
	if err := checkCtx(ctx, op); err != nil {
		return store.DomainState{}, err
	}
	if err := store.CheckChange(domain, change); err != nil {
		return store.DomainState{}, refused(op, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.domains[domain]
	if !ok {
		return store.DomainState{}, fmt.Errorf("memory: %s %q: %w", op, domain, store.ErrNotFound)
	}
	if change.Status != "" {
		d.Status = change.Status
	}
	if change.ClearBackoff {
		d.FailCount = 0
		d.FailingSince = time.Time{}
		d.NextAttemptAt = time.Time{}
		d.LastError = ""
		if d.Progress != nil {
			// The next attempt is now for the deliveries of the saved
			// progress too, whoever loads them.
			d.Progress = d.Progress.Clone()
			for i := range d.Progress.Deliveries {
				d.Progress.Deliveries[i].NextAttemptAt = time.Time{}
			}
		}
	}
	d.Cursor = max(d.Cursor, change.SkipTo)
	d.Revision++
	s.touched(d)
	return copyState(d), nil
}

// ForgetDomain implements store.Store. The domain's dead letters stay.
func (s *Store) ForgetDomain(ctx context.Context, domain string) error {
	const op = "forget domain"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := store.CheckForget(domain); err != nil {
		return refused(op, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.domains[domain]
	if !ok {
		return fmt.Errorf("memory: %s %q: %w", op, domain, store.ErrNotFound)
	}
	// Kept so that the lease tokens of the domain, registered again, go
	// on from there: an owner that has not noticed the loss yet cannot
	// pass the new state's fencing check.
	s.forgottenTokens[domain] = d.LeaseToken
	s.touched(d)
	s.unfollow(d)
	delete(s.domains, domain)
	return nil
}

// copyState returns a copy of d that shares nothing with the store.
func copyState(d *store.DomainState) store.DomainState {
	c := *d
	c.Progress = d.Progress.Clone()
	return c
}

// deliveryKey names the delivery a dead letter records.
type deliveryKey struct {
	activity      int64
	domain, inbox string
}

func keyOf(dl store.DeadLetter) deliveryKey { return deliveryKey{dl.ActivityID, dl.Domain, dl.Inbox} }

// recorded reports whether a dead letter for the same delivery is kept.
// Caller holds s.mu.
func (s *Store) recorded(dl store.DeadLetter) bool { return s.deadKeys[keyOf(dl)] }

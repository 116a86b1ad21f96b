package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/store"
)

// This file holds what the many-domain scenarios (instance, restart) need
// from the queue's API to resolve audiences and register domains, so that
// a change of that API is a change here only.

// followerResolver resolves the audiences of a workload to the shared inboxes
// of their follower domains, and counts the calls the queue makes.
type followerResolver struct {
	in *inboxes
	// members[a] is the set of follower domains of audience a.
	members []map[string]bool
	byKey   map[string]int
	calls   atomic.Int64
}

func newFollowerResolver(in *inboxes, w *workload) *followerResolver {
	f := &followerResolver{in: in, byKey: make(map[string]int, len(w.audiences))}
	for a, doms := range w.audiences {
		set := make(map[string]bool, len(doms))
		for _, d := range doms {
			set[in.domains[d]] = true
		}
		f.members = append(f.members, set)
		f.byKey[audienceKey(a)] = a
	}
	return f
}

// Inboxes is the queue's Resolver: the shared inbox of domain if it follows
// audience.
func (f *followerResolver) Inboxes(_ context.Context, audience, domain string) ([]string, error) {
	f.calls.Add(1)
	a, ok := f.byKey[audience]
	if !ok {
		return nil, fmt.Errorf("unknown audience %q", audience)
	}
	if !f.members[a][domain] {
		return nil, nil
	}
	return []string{"http://" + domain + "/inbox"}, nil
}

var _ queue.Resolver = (*followerResolver)(nil)

// registerKnown records every domain of in with its shared inbox in one batch,
// as a server does at boot with its stored domain list, and returns how
// long that took. The queue has no batch call yet, so this uses the store's
// (which the queue's AddDomains and SetSharedInbox call one domain at a
// time); run it before Start, so the first lease round finds the domains.
func registerKnown(ctx context.Context, st store.Store, in *inboxes) (time.Duration, error) {
	regs := make([]store.DomainRegistration, len(in.domains))
	for i, d := range in.domains {
		regs[i] = store.DomainRegistration{Domain: d, SharedInbox: in.sharedInbox(i)}
	}
	start := time.Now()
	if err := st.RegisterDomains(ctx, regs); err != nil {
		return 0, fmt.Errorf("register %d domains: %w", len(regs), err)
	}
	return time.Since(start), nil
}

package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/store"
)

// This file holds what the many-domain scenarios (instance, backlog,
// restart) need from the queue's API to resolve audiences and register
// domains, so that a change of that API is a change here only.

// followerResolver resolves the audiences of a workload to the shared inboxes
// of their follower domains, and counts the calls the queue makes.
type followerResolver struct {
	inboxes map[string][]string // by audience key
	calls   atomic.Int64
}

func newFollowerResolver(in *inboxes, w *workload) *followerResolver {
	f := &followerResolver{inboxes: make(map[string][]string, len(w.audiences))}
	for a, doms := range w.audiences {
		list := make([]string, len(doms))
		for i, d := range doms {
			list[i] = in.sharedInbox(d)
		}
		f.inboxes[audienceKey(a)] = list
	}
	return f
}

// Inboxes is the queue's Resolver: the shared inboxes of the audience's
// follower domains.
func (f *followerResolver) Inboxes(_ context.Context, audience string) ([]string, error) {
	f.calls.Add(1)
	list, ok := f.inboxes[audience]
	if !ok {
		return nil, fmt.Errorf("unknown audience %q", audience)
	}
	return list, nil
}

var _ queue.Resolver = (*followerResolver)(nil)

// registerKnown registers every domain of in with its shared inbox in one
// batch (Queue.RegisterDomains), as a server does at boot with its stored
// domain list, and returns how long that took.
func registerKnown(ctx context.Context, q *queue.Queue, in *inboxes) (time.Duration, error) {
	regs := make([]store.DomainRegistration, len(in.domains))
	for i, d := range in.domains {
		regs[i] = store.DomainRegistration{Domain: d, SharedInbox: in.sharedInbox(i)}
	}
	start := time.Now()
	if err := q.RegisterDomains(ctx, regs); err != nil {
		return 0, fmt.Errorf("register %d domains: %w", len(regs), err)
	}
	return time.Since(start), nil
}

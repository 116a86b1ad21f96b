package main

import (
	"context"
	"fmt"
	"time"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/store"
)

// registerDomains makes the domains known before enqueueing, as a server
// knows the domains of its followers (audiences reach known domains,
// AllDomains their shared inboxes).
func registerDomains(ctx context.Context, o *options, q *queue.Queue, in *inboxes) error {
	if o.fanout != fanoutAll {
		return q.AddDomains(ctx, in.domains...)
	}
	for i := range in.domains {
		if err := q.SetSharedInbox(ctx, in.sharedInbox(i)); err != nil {
			return err
		}
	}
	return nil
}

// waitOwners waits until the store counts the given number of live lease
// owners: every worker has made its first lease round.
func waitOwners(ctx context.Context, st store.Store, workers int) error {
	ctx, cancel := context.WithTimeout(ctx, queue.LeaseTTLDefault)
	defer cancel()
	for {
		ls, err := st.LeaseStats(ctx)
		if err != nil {
			return fmt.Errorf("waiting for the workers to start: %w", err)
		}
		if ls.Owners >= workers {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("only %d of %d workers take leases", ls.Owners, workers)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitLeased waits until the n known domains are all worked, split evenly
// (within one) between the workers, and returns how long that took. With
// several workers the split can take two lease rounds (LeaseTTL/3 each):
// the first worker may take every domain before the others start.
func waitLeased(ctx context.Context, q *queue.Queue, n, workers int) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 2*queue.LeaseTTLDefault)
	defer cancel()
	share := (n + workers - 1) / workers
	for {
		st, err := q.Stats(ctx)
		if err != nil {
			return 0, fmt.Errorf("waiting for the domains' leases: %w", err)
		}
		owned, byOwner := 0, map[string]int{}
		for _, d := range st.Domains {
			if d.Owner != "" {
				owned++
				byOwner[d.Owner]++
			}
		}
		balanced := len(byOwner) == min(workers, n)
		for _, c := range byOwner {
			balanced = balanced && c <= share+1
		}
		if owned >= n && balanced {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("after %s, %d of %d domains are leased, split %v", time.Since(start).Round(time.Second), owned, n, byOwner)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

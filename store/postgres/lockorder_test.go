package postgres_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/store"
)

// TestConcurrentSavesDoNotDeadlock runs, for one owner, checkpoints, lease
// renewals and releases of overlapping domains at once, each with its
// domains in a random order, as the queue's goroutines do (they list their
// workers from a map). Statements that lock rows in different orders would
// deadlock, and PostgreSQL would abort one of them.
func TestConcurrentSavesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	s, _ := newStoreWith(t, pgtest.Options{MaxConns: 6})
	ctx := t.Context()
	var regs []store.DomainRegistration
	for i := range 60 {
		regs = append(regs, store.DomainRegistration{Domain: fmt.Sprintf("d%02d.example", i)})
	}
	require.NoError(t, s.RegisterDomains(ctx, regs))
	held, err := s.AcquireLeases(ctx, "owner-a", time.Minute, len(regs))
	require.NoError(t, err)
	require.Len(t, held, len(regs))

	shuffled := func() []store.DomainState {
		out := append([]store.DomainState(nil), held...)
		rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		return out
	}
	deadline := time.Now().Add(2 * time.Second)
	var g errgroup.Group
	for range 2 {
		g.Go(func() error {
			for n := int64(1); time.Now().Before(deadline); n++ {
				states := shuffled()
				for i := range states {
					states[i].Cursor = 0
					states[i].FailCount = int(n % 5)
				}
				if err := s.Checkpoint(ctx, states, nil); err != nil {
					return fmt.Errorf("checkpoint: %w", err)
				}
			}
			return nil
		})
		g.Go(func() error {
			for time.Now().Before(deadline) {
				if _, err := s.RenewLeases(ctx, "owner-a", leasesOf(shuffled()), time.Minute); err != nil {
					return fmt.Errorf("renew: %w", err)
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		for time.Now().Before(deadline) {
			// Releasing leases of another owner touches the rows but
			// changes nothing.
			if err := s.ReleaseLeases(ctx, "owner-b", leasesOf(shuffled())); err != nil {
				return fmt.Errorf("release: %w", err)
			}
		}
		return nil
	})
	require.NoError(t, g.Wait())
}

func leasesOf(states []store.DomainState) []store.Lease {
	out := make([]store.Lease, len(states))
	for i, st := range states {
		out[i] = st.Lease()
	}
	return out
}

// TestKeepLeasesAndAdminChangesDoNotDeadlock runs an owner's KeepLeases
// calls (listing leases whose cursors rise, so they lock rows) at the same
// time as admin changes and registrations that change many of its domains
// at once, whose triggers move the owner's mark: the triggers lock the
// owner's mark only after their statement's domain rows, and the lease
// statements only read it, so nothing can wait in a circle.
func TestKeepLeasesAndAdminChangesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	s, _ := newStoreWith(t, pgtest.Options{MaxConns: 6})
	ctx := t.Context()
	var regs []store.DomainRegistration
	for i := range 60 {
		regs = append(regs, store.DomainRegistration{Domain: fmt.Sprintf("d%02d.example", i)})
	}
	require.NoError(t, s.RegisterDomains(ctx, regs))
	held, err := s.AcquireLeases(ctx, "owner-a", time.Minute, len(regs))
	require.NoError(t, err)
	require.Len(t, held, len(regs))
	var ids []int64
	for range 20 {
		ids = append(ids, appendOne(t, s, "d00.example"))
	}

	deadline := time.Now().Add(2 * time.Second)
	var g errgroup.Group
	g.Go(func() error {
		var mark int64
		for n := 0; time.Now().Before(deadline); n++ {
			leases := leasesOf(held)
			rand.Shuffle(len(leases), func(i, j int) { leases[i], leases[j] = leases[j], leases[i] })
			for i := range leases {
				leases[i].SettledThrough = ids[n%len(ids)]
			}
			full := n%3 == 0
			if !full {
				leases = leases[:len(leases)/2]
			}
			kept, err := s.KeepLeases(ctx, "owner-a", store.LeaseKeep{Full: full, Since: mark, Leases: leases}, time.Minute)
			if err != nil {
				return fmt.Errorf("keep: %w", err)
			}
			mark = kept.Mark
		}
		return nil
	})
	g.Go(func() error {
		for time.Now().Before(deadline) {
			d := held[rand.IntN(len(held))].Domain
			if _, err := s.ChangeDomain(ctx, d, store.DomainChange{ClearBackoff: true}); err != nil {
				return fmt.Errorf("change: %w", err)
			}
		}
		return nil
	})
	g.Go(func() error {
		for n := 0; time.Now().Before(deadline); n++ {
			sub := append([]store.DomainRegistration(nil), regs...)
			rand.Shuffle(len(sub), func(i, j int) { sub[i], sub[j] = sub[j], sub[i] })
			sub = sub[:20]
			for i := range sub {
				sub[i].SharedInbox = fmt.Sprintf("https://%s/inbox/%d", sub[i].Domain, n)
			}
			if err := s.RegisterDomains(ctx, sub); err != nil {
				return fmt.Errorf("register: %w", err)
			}
		}
		return nil
	})
	require.NoError(t, g.Wait())
}

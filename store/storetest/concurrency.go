package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// testConcurrency checks the guarantees that many goroutines (or processes)
// sharing a store depend on.
func testConcurrency(t *testing.T, su suite) {
	su.run(t, "AppendsAndReader", func(t *testing.T, s store.Store) {
		const (
			writers = 16
			batches = 50
		)
		ctx := t.Context()
		var (
			mu      sync.Mutex
			written []int64
			done    = make(chan struct{})
		)

		// The reader pages through the log by its last seen ID, as the
		// queue does, while the writers append.
		var seen []int64
		readerErr := make(chan error, 1)
		go func() {
			readerErr <- func() error {
				var after int64
				finished := false
				for {
					acts, err := s.Activities(ctx, after, 7)
					if err != nil {
						return err
					}
					for _, a := range acts {
						if a.ID <= after {
							return fmt.Errorf("read activity %d after %d", a.ID, after)
						}
						seen = append(seen, a.ID)
						after = a.ID
					}
					if len(acts) > 0 {
						continue
					}
					if finished {
						return nil
					}
					select {
					case <-done:
						// One more pass reads what the last writers appended.
						finished = true
					default:
					}
				}
			}()
		}()

		var g group
		for w := range writers {
			g.Go(func() error {
				for b := range batches {
					batch := make([]store.NewActivity, 1+b%3)
					for i := range batch {
						batch[i] = activity("shared.example",
							fmt.Sprintf("w%d.example", w),
							fmt.Sprintf("n%d.example", (w+b+i)%7))
					}
					got, err := appendedIDs(s.Append(ctx, batch))
					if err != nil {
						return err
					}
					if len(got) != len(batch) {
						return fmt.Errorf("appended %d activities, got %d IDs", len(batch), len(got))
					}
					mu.Lock()
					written = append(written, got...)
					mu.Unlock()
				}
				return nil
			})
		}
		// Registrations race with the appends naming the same new domains.
		for r := range 2 {
			g.Go(func() error {
				for i := range 20 {
					err := s.RegisterDomains(ctx, []store.DomainRegistration{
						{Domain: fmt.Sprintf("n%d.example", (r+i)%7)},
						{Domain: fmt.Sprintf("late%d.example", i)},
					})
					if err != nil {
						return err
					}
				}
				return nil
			})
		}
		require.NoError(t, g.Wait())
		close(done)
		require.NoError(t, <-readerErr)

		slices.Sort(written)
		require.Len(t, slices.Compact(slices.Clone(written)), len(written), "an ID was assigned twice")
		require.Equal(t, written, seen, "the reader skipped or repeated activities")

		// No domain's cursor passed an activity addressed to it.
		acts, err := s.Activities(ctx, 0, len(written)+1)
		require.NoError(t, err)
		firstFor := make(map[string]int64)
		for _, a := range acts {
			for _, d := range a.Domains {
				if _, ok := firstFor[d]; !ok {
					firstFor[d] = a.ID
				}
			}
		}
		doms, err := s.Domains(ctx, nil)
		require.NoError(t, err)
		require.Len(t, doms, 1+writers+7+20)
		for _, st := range doms {
			if first, ok := firstFor[st.Domain]; ok {
				require.Less(t, st.Cursor, first, "%s skips activity %d", st.Domain, first)
			}
		}
	})

	su.run(t, "FencingTokensNeverRepeat", testTokenChurn)
	su.run(t, "PruneRacesAppend", testPruneRacesAppend)

	su.run(t, "AcquireLeasesOneOwnerPerDomain", func(t *testing.T, s store.Store) {
		const (
			domains = 30
			owners  = 10
			rounds  = 3
		)
		ctx := t.Context()
		for i := range domains {
			register(t, s, fmt.Sprintf("d%02d.example", i))
		}
		for round := range rounds {
			var (
				mu   sync.Mutex
				held = make(map[string][]store.DomainState)
			)
			var g group
			for o := range owners {
				owner := fmt.Sprintf("owner-%d", o)
				g.Go(func() error {
					got, err := s.AcquireLeases(ctx, owner, longTTL, 5)
					if err != nil {
						return err
					}
					mu.Lock()
					held[owner] = got
					mu.Unlock()
					return nil
				})
			}
			require.NoError(t, g.Wait())

			holder := make(map[string]string)
			for owner, states := range held {
				for _, st := range states {
					prev, dup := holder[st.Domain]
					require.False(t, dup, "round %d: %s given to %s and %s", round, st.Domain, prev, owner)
					holder[st.Domain] = owner
				}
			}
			require.NotEmpty(t, holder)
			for domain, owner := range holder {
				require.Equal(t, owner, domainState(t, s, domain).Owner)
			}
			for owner, states := range held {
				require.NoError(t, s.ReleaseLeases(ctx, owner, leasesOf(states)))
			}
		}
	})
}

// testPruneRacesAppend checks that Prune, running while activities naming
// new domains are appended, never deletes an activity those domains have not
// settled.
func testPruneRacesAppend(t *testing.T, s store.Store) {
	const (
		writers = 8
		appends = 30
	)
	ctx := t.Context()
	var (
		mu    sync.Mutex
		named = make(map[int64]string)
		stop  = make(chan struct{})
	)
	var pruner group
	pruner.Go(func() error {
		for {
			select {
			case <-stop:
				return nil
			default:
			}
			if _, err := s.Prune(ctx); err != nil {
				return err
			}
		}
	})
	var g group
	for w := range writers {
		g.Go(func() error {
			for i := range appends {
				domain := fmt.Sprintf("w%d-%d.example", w, i)
				got, err := appendedIDs(s.Append(ctx, []store.NewActivity{activity(), activity(domain)}))
				if err != nil {
					return err
				}
				mu.Lock()
				named[got[1]] = domain
				mu.Unlock()
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	close(stop)
	require.NoError(t, pruner.Wait())

	for id, domain := range named {
		acts, err := s.Activities(ctx, id-1, 1)
		require.NoError(t, err)
		require.True(t, len(acts) == 1 && acts[0].ID == id,
			"activity %d for %s, which never settled it, was pruned", id, domain)
		require.Less(t, domainState(t, s, domain).Cursor, id)
	}
}

// testTokenChurn is registered by testConcurrency.
func testTokenChurn(t *testing.T, s store.Store) {
	const (
		domains = 10
		owners  = 8
		rounds  = 30
	)
	ctx := t.Context()
	for i := range domains {
		register(t, s, fmt.Sprintf("d%02d.example", i))
	}
	type grant struct {
		domain string
		token  int64
	}
	var (
		mu     sync.Mutex
		grants = make(map[grant]string)
		dup    []string
	)
	var g group
	for o := range owners {
		owner := fmt.Sprintf("owner-%d", o)
		g.Go(func() error {
			for r := range rounds {
				got, err := s.AcquireLeases(ctx, owner, shortTTL, 3)
				if err != nil {
					return err
				}
				mu.Lock()
				for _, st := range got {
					k := grant{st.Domain, st.LeaseToken}
					if prev, ok := grants[k]; ok {
						dup = append(dup, fmt.Sprintf("%s token %d given to %s and %s", k.domain, k.token, prev, owner))
					}
					grants[k] = owner
				}
				mu.Unlock()
				// Releasing every other round makes the domains change hands.
				if r%2 == 0 {
					if err := s.ReleaseLeases(ctx, owner, leasesOf(got)); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	require.Empty(t, dup, "a fencing token was given out twice")
	require.Greater(t, len(grants), domains, "the domains never changed hands")
}

// group runs functions in goroutines and keeps the first error, so that
// workers report failures to the test goroutine instead of calling FailNow.
type group struct {
	wg  sync.WaitGroup
	mu  sync.Mutex
	err error
}

// Go runs f in a new goroutine.
func (g *group) Go(f func() error) {
	g.wg.Go(func() {
		if err := f(); err != nil {
			g.mu.Lock()
			if g.err == nil {
				g.err = err
			}
			g.mu.Unlock()
		}
	})
}

// Wait waits for every function and returns the first error.
func (g *group) Wait() error {
	g.wg.Wait()
	return g.err
}

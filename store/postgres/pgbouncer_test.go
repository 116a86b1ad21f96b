package postgres_test

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/postgres"
	"github.com/apqueue/apqueue/store/storetest"
)

// bouncerModes are the query modes that work through pgBouncer in
// transaction pooling mode (prepared statements cached per connection do
// not: the next transaction may run on another server connection).
var bouncerModes = modes[1:]

// TestConformanceBehindPgBouncer runs the conformance suite through a real
// pgBouncer in transaction pooling mode, with the listener connected to the
// database directly (Config.ListenConnString), as the package doc advises.
func TestConformanceBehindPgBouncer(t *testing.T) {
	t.Parallel()
	bouncer := pgtest.PgBouncer(t)
	for _, m := range bouncerModes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			storetest.Run(t, func(t *testing.T) store.Store {
				db := pgtest.New(t, &pgtest.Options{Mode: m.mode, Through: bouncer})
				s, _ := newStoreOn(t, db, &postgres.Config{ListenConnString: db.ConnString})
				return s
			})
		})
	}
}

// TestQueueBehindPgBouncer runs a queue through a real pgBouncer in
// transaction pooling mode, polling (no LISTEN), with transactional and
// plain enqueues from concurrent callers: everything committed is
// delivered once, in ID order, and nothing rolled back is.
func TestQueueBehindPgBouncer(t *testing.T) {
	t.Parallel()
	bouncer := pgtest.PgBouncer(t)
	for _, m := range bouncerModes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.New(t, &pgtest.Options{Mode: m.mode, Through: bouncer, MaxConns: 8})
			s, _ := newStoreOn(t, db, &postgres.Config{PollOnly: true, Logger: quietLogger()})
			fake := &sendertest.Fake{}
			cfg := queueConfig("p")
			cfg.PollInterval = 20 * time.Millisecond
			q := startQueue(t, s, fake, cfg)
			const inbox = "https://a.example/inbox"

			// An open transaction holds back nothing.
			open, err := db.Pool.Begin(t.Context())
			require.NoError(t, err)
			require.NoError(t, q.EnqueueTx(t.Context(), s.Tx(open), note(0, inbox)))
			plain, err := q.Enqueue(t.Context(), note(1, inbox))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return len(fake.Delivered(inbox)) == 1 }, 10*time.Second, 5*time.Millisecond)
			require.Equal(t, []int64{plain}, fake.Delivered(inbox))
			require.NoError(t, open.Commit(t.Context()))

			var g errgroup.Group
			for w := range 4 {
				g.Go(func() error {
					for i := range 10 {
						n := 100 + w*10 + i
						if i%2 == 0 {
							_, err := q.Enqueue(t.Context(), note(n, inbox))
							if err != nil {
								return err
							}
							continue
						}
						tx, err := db.Pool.Begin(t.Context())
						if err != nil {
							return err
						}
						if err := q.EnqueueTx(t.Context(), s.Tx(tx), note(n, inbox)); err != nil {
							_ = tx.Rollback(t.Context())
							return err
						}
						if i == 9 {
							if err := tx.Rollback(t.Context()); err != nil {
								return err
							}
							continue
						}
						if err := tx.Commit(t.Context()); err != nil {
							return err
						}
					}
					return nil
				})
			}
			require.NoError(t, g.Wait())
			const want = 2 + 4*9
			require.Eventually(t, func() bool { return len(fake.Delivered(inbox)) >= want }, 10*time.Second, 5*time.Millisecond)
			// Several requests are in flight at once, so arrivals need not
			// be in ID order; each activity arrives once.
			got := slices.Sorted(slices.Values(fake.Delivered(inbox)))
			require.Len(t, slices.Compact(slices.Clone(got)), want, "an activity was delivered twice")
			acts, err := s.Activities(t.Context(), 0, 1000)
			require.NoError(t, err)
			require.Equal(t, ids(acts), got, "delivered something other than the log")
			var listed []string
			for _, a := range acts {
				listed = append(listed, string(a.Body))
			}
			for w := range 4 {
				require.NotContains(t, listed, string(note(100+w*10+9, inbox).Body), "a rolled-back activity is in the log")
			}
		})
	}
}

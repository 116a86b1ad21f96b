package storetest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// testContext checks that every method fails with an error wrapping
// context.Canceled when called with an ended context, and changes nothing.
func testContext(t *testing.T, su suite) {
	su.run(t, "Canceled", func(t *testing.T, s store.Store) {
		register(t, s, "a.example")
		appendN(t, s, 2)
		held, err := s.AcquireLeases(t.Context(), "owner-a", longTTL, 1)
		require.NoError(t, err)
		require.Len(t, held, 1)
		before := head(t, s)

		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		calls := map[string]func() error{
			"Append": func() error {
				_, err := s.Append(ctx, []store.NewActivity{activity("b.example")})
				return err
			},
			"Activities": func() error { _, err := s.Activities(ctx, 0, 10); return err },
			"Head":       func() error { _, err := s.Head(ctx); return err },
			"RegisterDomains": func() error {
				return s.RegisterDomains(ctx, []store.DomainRegistration{{Domain: "c.example"}})
			},
			"Domains": func() error { _, err := s.Domains(ctx, nil); return err },
			"Checkpoint": func() error {
				st := held[0]
				st.Cursor = 2
				return s.Checkpoint(ctx, []store.DomainState{st}, nil)
			},
			"AcquireLeases": func() error { _, err := s.AcquireLeases(ctx, "owner-b", longTTL, 1); return err },
			"RenewLeases": func() error {
				_, err := s.RenewLeases(ctx, "owner-a", leasesOf(held), longTTL)
				return err
			},
			"ReleaseLeases":     func() error { return s.ReleaseLeases(ctx, "owner-a", leasesOf(held)) },
			"LeaseStats":        func() error { _, err := s.LeaseStats(ctx); return err },
			"DeadLetters":       func() error { _, err := s.DeadLetters(ctx, store.DeadLetterFilter{}); return err },
			"DeleteDeadLetters": func() error { _, err := s.DeleteDeadLetters(ctx, []int64{1}); return err },
			"Prune":             func() error { _, err := s.Prune(ctx); return err },
			"ChangeDomain": func() error {
				_, err := s.ChangeDomain(ctx, "a.example", store.DomainChange{Status: store.StatusPaused})
				return err
			},
		}
		for name, call := range calls {
			require.ErrorIs(t, call(), context.Canceled, name)
		}

		require.Equal(t, before, head(t, s), "a cancelled Append appended")
		doms, err := s.Domains(t.Context(), nil)
		require.NoError(t, err)
		require.Equal(t, []string{"a.example"}, names(doms), "a cancelled call registered a domain")
		st := domainState(t, s, "a.example")
		require.Zero(t, st.Cursor, "a cancelled Checkpoint saved")
		require.Equal(t, store.StatusActive, st.Status, "a cancelled ChangeDomain changed the domain")
		require.Equal(t, "owner-a", st.Owner, "a cancelled ReleaseLeases released")
		acts, err := s.Activities(t.Context(), 0, 10)
		require.NoError(t, err)
		require.Len(t, acts, 2, "a cancelled Prune deleted")
	})
}

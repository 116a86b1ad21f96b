package storetest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// testRegisterDomains checks that registration starts new domains at the
// head, records shared inboxes, and leaves known domains' progress alone.
func testRegisterDomains(t *testing.T, su suite) {
	su.run(t, "NewDomainStartsAtHead", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		require.NoError(t, s.RegisterDomains(ctx, []store.DomainRegistration{{Domain: "early.example"}}))
		require.Zero(t, domainState(t, s, "early.example").Cursor, "cursor of a domain registered on an empty log")

		appendN(t, s, 3)
		h := head(t, s)
		require.NoError(t, s.RegisterDomains(ctx, []store.DomainRegistration{
			{Domain: "a.example", SharedInbox: "https://a.example/inbox"},
			{Domain: "b.example"},
		}))
		a := domainState(t, s, "a.example")
		require.Equal(t, h, a.Cursor)
		require.Equal(t, "https://a.example/inbox", a.SharedInbox)
		require.Equal(t, store.StatusActive, a.Status)
		require.Empty(t, a.Owner)
		b := domainState(t, s, "b.example")
		require.Equal(t, h, b.Cursor)
		require.Empty(t, b.SharedInbox)
	})

	su.run(t, "KnownDomainKeepsProgress", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		require.NoError(t, s.RegisterDomains(ctx, []store.DomainRegistration{
			{Domain: "a.example", SharedInbox: "https://a.example/inbox"},
			{Domain: "b.example"},
		}))
		appendN(t, s, 5)
		setStates(t, s, func(st *store.DomainState) {
			st.Cursor = 1
			if st.Domain == "b.example" {
				st.Status = store.StatusDead
			}
		})
		leased, err := s.AcquireLeases(ctx, "owner-a", longTTL, 10)
		require.NoError(t, err)
		require.Len(t, leased, 2)

		require.NoError(t, s.RegisterDomains(ctx, []store.DomainRegistration{
			{Domain: "a.example", SharedInbox: "https://a.example/shared"},
			{Domain: "b.example", SharedInbox: "https://b.example/inbox"},
		}))
		a := domainState(t, s, "a.example")
		require.EqualValues(t, 1, a.Cursor, "registration moved a known cursor")
		require.Equal(t, "https://a.example/shared", a.SharedInbox, "shared inbox not updated")
		require.Equal(t, "owner-a", a.Owner, "registration changed a lease")
		require.Equal(t, byDomain(leased)["a.example"].LeaseToken, a.LeaseToken)
		b := domainState(t, s, "b.example")
		require.EqualValues(t, 1, b.Cursor)
		require.Equal(t, store.StatusDead, b.Status, "registration changed a status")
		require.Equal(t, "https://b.example/inbox", b.SharedInbox, "shared inbox not set")

		// A new shared inbox is a change the owner must take in.
		require.Equal(t, byDomain(leased)["a.example"].Revision+1, a.Revision, "a new shared inbox bumps the revision")
		err = s.Checkpoint(ctx, []store.DomainState{byDomain(leased)["a.example"]}, nil)
		require.ErrorIs(t, err, store.ErrStale, "an owner unaware of the new shared inbox saved")

		// A registration without a shared inbox, or with the same one, keeps
		// the known one and the revision.
		require.NoError(t, s.RegisterDomains(ctx, []store.DomainRegistration{{Domain: "a.example"}, {Domain: "b.example", SharedInbox: "https://b.example/inbox"}}))
		again := domainState(t, s, "a.example")
		require.Equal(t, "https://a.example/shared", again.SharedInbox)
		require.Equal(t, a.Revision, again.Revision)
		require.Equal(t, b.Revision, domainState(t, s, "b.example").Revision)
	})

	su.run(t, "EmptyDomainIsInvalid", func(t *testing.T, s store.Store) {
		err := s.RegisterDomains(t.Context(), []store.DomainRegistration{{Domain: "a.example"}, {Domain: ""}})
		require.ErrorIs(t, err, store.ErrInvalid)
		doms, err := s.Domains(t.Context(), nil)
		require.NoError(t, err)
		require.Empty(t, doms, "a refused registration registered something")
	})
}

// testDomains checks reading domain states.
func testDomains(t *testing.T, su suite) {
	su.run(t, "SortedAndFiltered", func(t *testing.T, s store.Store) {
		ctx := t.Context()
		all, err := s.Domains(ctx, nil)
		require.NoError(t, err)
		require.Empty(t, all, "domains of an empty store")

		register(t, s, "c.example", "a.example", "b.example:8443")
		all, err = s.Domains(ctx, nil)
		require.NoError(t, err)
		require.Equal(t, []string{"a.example", "b.example:8443", "c.example"}, names(all))
		all, err = s.Domains(ctx, []string{})
		require.NoError(t, err)
		require.Len(t, all, 3, "an empty name list means every domain")

		some, err := s.Domains(ctx, []string{"c.example", "unknown.example", "a.example"})
		require.NoError(t, err)
		require.Equal(t, []string{"a.example", "c.example"}, names(some))

		none, err := s.Domains(ctx, []string{"unknown.example"})
		require.NoError(t, err)
		require.Empty(t, none)
	})
}

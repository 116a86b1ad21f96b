package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// testAppend checks that Append assigns increasing IDs, is atomic, registers
// new domains without skipping their activities, and keeps what it is given.
func testAppend(t *testing.T, su suite) {
	su.run(t, "IDsStrictlyIncrease", func(t *testing.T, s store.Store) {
		var all []int64
		for _, n := range []int{3, 1, 5} {
			got := appendN(t, s, n)
			for i, id := range got {
				if i > 0 {
					require.Greater(t, id, got[i-1], "IDs of a batch are in order")
				}
				if len(all) > 0 {
					require.Greater(t, id, all[len(all)-1], "IDs exceed every earlier ID")
				}
			}
			all = append(all, got...)
		}
		require.Positive(t, all[0])
		require.Equal(t, all[len(all)-1], head(t, s))
		acts, err := s.Activities(t.Context(), 0, 100)
		require.NoError(t, err)
		require.Equal(t, all, ids(acts))
	})

	su.run(t, "FieldsRoundTrip", func(t *testing.T, s store.Store) {
		full := store.NewActivity{
			Actor:       "https://local.example/users/alice",
			OrderingKey: "https://local.example/notes/1",
			Body:        []byte(`{"type":"Create","object":"https://local.example/notes/1"}`),
			Inboxes:     []string{"https://a.example/inbox", "https://b.example/users/bob/inbox"},
			Domains:     []string{"a.example", "b.example"},
			Audiences:   []string{"https://local.example/users/alice/followers"},
			AllDomains:  true,
		}
		// The body is stored byte for byte, spacing, key order and escapes
		// included: its digest is computed from the stored bytes.
		bare := store.NewActivity{Body: []byte("{\"type\" : \"Delete\",\n  \"a\":\"caf\u00e9 \\u00e9\"}")}
		before := time.Now()
		got, err := appendedIDs(s.Append(t.Context(), []store.NewActivity{full, bare}))
		after := time.Now()
		require.NoError(t, err)
		require.Len(t, got, 2)

		acts, err := s.Activities(t.Context(), 0, 10)
		require.NoError(t, err)
		require.Len(t, acts, 2)
		a := acts[0]
		require.Equal(t, got[0], a.ID)
		require.Equal(t, full.Actor, a.Actor)
		require.Equal(t, full.OrderingKey, a.OrderingKey)
		require.Equal(t, full.Body, a.Body)
		require.Equal(t, full.Inboxes, a.Inboxes)
		require.Equal(t, full.Domains, a.Domains)
		require.Equal(t, full.Audiences, a.Audiences)
		require.True(t, a.AllDomains)
		requireNear(t, before, after, a.EnqueuedAt, "EnqueuedAt")

		b := acts[1]
		require.Equal(t, got[1], b.ID)
		require.Equal(t, bare.Body, b.Body)
		require.Empty(t, b.Actor)
		require.Empty(t, b.OrderingKey)
		require.Empty(t, b.Inboxes)
		require.Empty(t, b.Domains)
		require.Empty(t, b.Audiences)
		require.False(t, b.AllDomains)
		require.False(t, b.EnqueuedAt.IsZero())
	})

	su.run(t, "DoesNotAliasCallerMemory", func(t *testing.T, s store.Store) {
		in := activity("a.example")
		wantBody := append([]byte(nil), in.Body...)
		wantInboxes := append([]string(nil), in.Inboxes...)
		_, err := s.Append(t.Context(), []store.NewActivity{in})
		require.NoError(t, err)
		in.Body[0] = 'X'
		in.Inboxes[0] = "https://evil.example/inbox"

		acts, err := s.Activities(t.Context(), 0, 1)
		require.NoError(t, err)
		require.Len(t, acts, 1)
		require.Equal(t, wantBody, acts[0].Body, "changing the appended body changed the log")
		require.Equal(t, wantInboxes, acts[0].Inboxes)
		acts[0].Body[0] = 'Y'
		acts[0].Inboxes[0] = "https://evil.example/inbox"

		again, err := s.Activities(t.Context(), 0, 1)
		require.NoError(t, err)
		require.Equal(t, wantBody, again[0].Body, "changing a returned body changed the log")
		require.Equal(t, wantInboxes, again[0].Inboxes)
	})

	su.run(t, "EmptyBatchIsInvalid", func(t *testing.T, s store.Store) {
		_, err := s.Append(t.Context(), nil)
		require.ErrorIs(t, err, store.ErrInvalid)
		_, err = s.Append(t.Context(), []store.NewActivity{})
		require.ErrorIs(t, err, store.ErrInvalid)
		require.Zero(t, head(t, s))
	})

	su.run(t, "BatchIsAtomic", func(t *testing.T, s store.Store) {
		noBody := activity("c.example")
		noBody.Body = nil
		emptyDomain := activity("d.example")
		emptyDomain.Domains = append(emptyDomain.Domains, "")
		for name, bad := range map[string]store.NewActivity{"no body": noBody, "empty domain": emptyDomain} {
			_, err := s.Append(t.Context(), []store.NewActivity{activity("a.example"), bad, activity("b.example")})
			require.ErrorIs(t, err, store.ErrInvalid, name)
		}
		require.Zero(t, head(t, s), "a refused batch appended something")
		acts, err := s.Activities(t.Context(), 0, 10)
		require.NoError(t, err)
		require.Empty(t, acts)
		doms, err := s.Domains(t.Context(), nil)
		require.NoError(t, err)
		require.Empty(t, doms, "a refused batch registered domains")

		id := appendOne(t, s, "a.example")
		require.Equal(t, id, head(t, s))
	})

	su.run(t, "RegistersNewDomains", func(t *testing.T, s store.Store) {
		appendOne(t, s, "old.example")
		appendN(t, s, 2)
		before := head(t, s)
		got, err := appendedIDs(s.Append(t.Context(), []store.NewActivity{
			activity(),
			activity("old.example", "first.example"),
			activity("second.example", "first.example"),
		}))
		require.NoError(t, err)

		for domain, firstID := range map[string]int64{"first.example": got[1], "second.example": got[2]} {
			st := domainState(t, s, domain)
			// The cursor must not pass the first activity naming the domain,
			// and need not go back before what readers had already seen.
			require.LessOrEqual(t, st.Cursor, firstID-1, domain)
			require.GreaterOrEqual(t, st.Cursor, before, domain)
			require.Equal(t, store.StatusActive, st.Status, domain)
			require.Empty(t, st.Owner, domain)
			require.Zero(t, st.FailCount, domain)

			acts, err := s.Activities(t.Context(), st.Cursor, 100)
			require.NoError(t, err)
			require.Contains(t, ids(acts), firstID, "%s: its first activity is behind its cursor", domain)
		}
	})

	su.run(t, "KeepsKnownDomains", func(t *testing.T, s store.Store) {
		require.NoError(t, s.RegisterDomains(t.Context(), []store.DomainRegistration{
			{Domain: "known.example", SharedInbox: "https://known.example/inbox"},
		}))
		appendN(t, s, 3)
		setStates(t, s, func(st *store.DomainState) {
			st.Cursor = 2
			st.Status = store.StatusPaused
			st.FailCount = 4
		})
		leased, err := s.AcquireLeases(t.Context(), "owner-a", longTTL, 10)
		require.NoError(t, err)
		require.Len(t, leased, 1)
		want := domainState(t, s, "known.example")

		appendOne(t, s, "known.example")
		got := domainState(t, s, "known.example")
		require.Equal(t, want.Cursor, got.Cursor)
		require.Equal(t, want.Status, got.Status)
		require.Equal(t, want.FailCount, got.FailCount)
		require.Equal(t, want.SharedInbox, got.SharedInbox)
		require.Equal(t, "owner-a", got.Owner)
		require.Equal(t, leased[0].LeaseToken, got.LeaseToken)
		requireTimeEqual(t, leased[0].LeaseExpiresAt, got.LeaseExpiresAt, "LeaseExpiresAt")
	})
}

// testActivities checks reading the log in batches, and Head.
func testActivities(t *testing.T, su suite) {
	su.run(t, "AfterAndLimit", func(t *testing.T, s store.Store) {
		all := append(appendN(t, s, 4), appendN(t, s, 6)...)
		ctx := t.Context()
		cases := []struct {
			after int64
			limit int
			want  []int64
		}{
			{0, 3, all[:3]},
			{0, 100, all},
			{all[2], 3, all[3:6]},
			{all[8], 5, all[9:]},
			{all[9], 5, nil},
			{all[9] + 1000, 5, nil},
		}
		for _, c := range cases {
			got, err := s.Activities(ctx, c.after, c.limit)
			require.NoError(t, err)
			if c.want == nil {
				require.Empty(t, got, "after %d", c.after)
				continue
			}
			require.Equal(t, c.want, ids(got), "after %d limit %d", c.after, c.limit)
		}

		// Paging through by the last returned ID reads everything once.
		var paged []int64
		for after := int64(0); ; {
			got, err := s.Activities(ctx, after, 3)
			require.NoError(t, err)
			if len(got) == 0 {
				break
			}
			require.Greater(t, got[0].ID, after, "Activities returned an ID not after %d", after)
			paged = append(paged, ids(got)...)
			require.LessOrEqual(t, len(paged), len(all), "paging does not end")
			after = got[len(got)-1].ID
		}
		require.Equal(t, all, paged)
	})

	su.run(t, "LimitMustBePositive", func(t *testing.T, s store.Store) {
		appendN(t, s, 1)
		for _, limit := range []int{0, -1} {
			_, err := s.Activities(t.Context(), 0, limit)
			require.ErrorIs(t, err, store.ErrInvalid, "limit %d", limit)
		}
	})

	su.run(t, "Head", func(t *testing.T, s store.Store) {
		require.Zero(t, head(t, s), "head of an empty log")
		got := appendN(t, s, 3)
		require.Equal(t, got[2], head(t, s))

		// Pruning everything keeps the head, and IDs are never reused.
		res, err := s.Prune(t.Context())
		require.NoError(t, err)
		require.EqualValues(t, 3, res.Deleted)
		require.Equal(t, got[2], head(t, s), "pruning moved the head")
		next := appendOne(t, s)
		require.Greater(t, next, got[2], "an ID was reused after pruning")
		require.Equal(t, next, head(t, s))
	})
}

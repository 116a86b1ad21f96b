package queuetest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

// NeverSeenDomainsAreDelivered enqueues to domains the store has never
// seen, through an explicit inbox and through an audience, with no
// AddDomains call: each domain is registered with its activity and
// delivered to.
func NeverSeenDomainsAreDelivered(t *testing.T, newStore func(*testing.T) store.Store) {
	st := newStore(t)
	fake := &sendertest.Fake{}
	cfg := Config("owner")
	cfg.Resolver = queue.ResolverFunc(func(context.Context, string) ([]string, error) {
		return []string{"https://audience.example/users/bob/inbox"}, nil
	})
	q := Start(t, st, fake, cfg)
	ctx := t.Context()
	followersPost := Note(2)
	followersPost.Audiences = []string{"https://local.example/users/alice/followers"}
	ids, err := q.EnqueueMany(ctx, []queue.Activity{Note(1, "https://explicit.example/inbox"), followersPost})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return len(fake.Delivered("https://explicit.example/inbox")) == 1 &&
			len(fake.Delivered("https://audience.example/users/bob/inbox")) == 1
	}, 10*time.Second, 5*time.Millisecond, "delivered to every never-seen domain")
	require.Equal(t, []int64{ids[0]}, fake.Delivered("https://explicit.example/inbox"))
	require.Equal(t, []int64{ids[1]}, fake.Delivered("https://audience.example/users/bob/inbox"))
	doms, err := st.Domains(ctx, []string{"explicit.example", "audience.example"})
	require.NoError(t, err)
	require.Len(t, doms, 2, "registered with their activities")
}

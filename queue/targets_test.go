package queue

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/clock"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

const followers = "https://local.example/users/alice/followers"

// countingResolver answers from a table and counts the questions.
type countingResolver struct {
	mu      sync.Mutex
	inboxes map[string][]string // domain -> inboxes of followers
	calls   map[string]int
}

func (r *countingResolver) Inboxes(ctx context.Context, audience, dom string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[dom]++
	if audience != followers {
		return nil, nil
	}
	return r.inboxes[dom], nil
}

func (r *countingResolver) set(dom string, inboxes ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inboxes[dom] = inboxes
}

func (r *countingResolver) callsFor(dom string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[dom]
}

func TestAudiencesResolvedPerDomainCachedAndInvalidated(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(epoch)
	st := newMemory()
	res := &countingResolver{inboxes: map[string][]string{
		"a.example": {"https://a.example/users/1/inbox", "https://a.example/users/2/inbox", "https://b.example/not-this-domain"},
		"b.example": {"https://b.example/inbox"},
	}, calls: map[string]int{}}
	fake := &sendertest.Fake{}
	cfg := testConfig()
	cfg.Resolver = res
	cfg.ResolverTTL = time.Minute
	cfg.clock = clk
	q := startQueue(t, st, fake, cfg)
	require.NoError(t, q.AddDomains(context.Background(), "a.example", "b.example", "c.example"))

	post := func(n int) Activity {
		a := note(n)
		a.Audiences = []string{followers}
		return a
	}
	enqueueAll(t, q, post(1), post(2), post(3))
	eventually(t, func() bool { return fake.DeliveredCount() == 9 }, "3 activities to 3 inboxes")
	require.Len(t, fake.Delivered("https://a.example/users/1/inbox"), 3)
	require.Len(t, fake.Delivered("https://a.example/users/2/inbox"), 3)
	require.Len(t, fake.Delivered("https://b.example/inbox"), 3)
	require.Empty(t, fake.Delivered("https://b.example/not-this-domain"), "an inbox of another domain is ignored")
	for _, d := range []string{"a.example", "b.example", "c.example"} {
		require.Equal(t, 1, res.callsFor(d), "one question per audience and domain while cached: %s", d)
	}

	// A new follower on c.example: invalidation makes it count at once.
	res.set("c.example", "https://c.example/inbox")
	q.InvalidateAudience(followers)
	enqueueAll(t, q, post(4))
	eventually(t, func() bool { return len(fake.Delivered("https://c.example/inbox")) == 1 }, "new follower reached after invalidation")
	require.Equal(t, 2, res.callsFor("c.example"))

	// Without invalidation, the cache holds for the TTL, then expires.
	res.set("b.example")
	enqueueAll(t, q, post(5))
	eventually(t, func() bool { return len(fake.Delivered("https://b.example/inbox")) == 5 }, "cached answer used within the TTL")
	clk.Advance(time.Minute)
	ids := enqueueAll(t, q, post(6))
	eventually(t, func() bool { return domainState(t, st, "b.example").Cursor == ids[0] }, "b.example settled")
	require.Len(t, fake.Delivered("https://b.example/inbox"), 5, "expired answer asked again: no follower left")
}

func TestSharedInboxPreferredAndDeduplicated(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	q := startQueue(t, st, fake, testConfig())
	require.NoError(t, q.SetSharedInbox(context.Background(), "https://a.example/inbox"))
	enqueueAll(t, q, note(1, "https://a.example/users/1/inbox", "https://a.example/users/2/inbox", "https://b.example/users/1/inbox", "https://b.example/users/2/inbox"))
	eventually(t, func() bool { return fake.DeliveredCount() == 3 }, "delivered")
	require.Len(t, fake.Delivered("https://a.example/inbox"), 1, "one delivery to the shared inbox")
	require.Empty(t, fake.Delivered("https://a.example/users/1/inbox"))
	require.Len(t, fake.Delivered("https://b.example/users/1/inbox"), 1, "personal inboxes where no shared inbox is known")
	require.Len(t, fake.Delivered("https://b.example/users/2/inbox"), 1)
}

func TestAllDomainsReachesEveryKnownDomain(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	q := startQueue(t, st, fake, testConfig())
	ctx := context.Background()
	require.NoError(t, q.SetSharedInbox(ctx, "https://a.example/inbox"))
	require.NoError(t, q.SetSharedInbox(ctx, "https://b.example/shared"))
	require.NoError(t, q.AddDomains(ctx, "c.example"))
	del := Activity{Body: []byte(`{"id":"https://local.example/users/alice#delete","type":"Delete","actor":"https://local.example/users/alice","object":"https://local.example/users/alice"}`), AllDomains: true}
	ids := enqueueAll(t, q, del)
	eventually(t, func() bool {
		return len(fake.Delivered("https://a.example/inbox")) == 1 && len(fake.Delivered("https://b.example/shared")) == 1
	}, "every domain with a shared inbox gets it")
	eventually(t, func() bool { return domainState(t, st, "c.example").Cursor == ids[0] }, "c.example settled")
	dls, err := st.DeadLetters(ctx, store.DeadLetterFilter{Domain: "c.example"})
	require.NoError(t, err)
	require.Len(t, dls, 1, "a domain without a shared inbox is recorded, not skipped silently")
	require.Contains(t, dls[0].Reason, "no shared inbox")
}

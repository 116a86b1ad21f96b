package queue

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
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
	inboxes map[string][]string // audience -> inboxes
	calls   map[string]int
}

func newCountingResolver() *countingResolver {
	return &countingResolver{inboxes: map[string][]string{}, calls: map[string]int{}}
}

func (r *countingResolver) Inboxes(ctx context.Context, audience string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[audience]++
	return r.inboxes[audience], nil
}

func (r *countingResolver) set(audience string, inboxes ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inboxes[audience] = inboxes
}

// webEnqueuer is a queue that stands for a web process: it enqueues, and
// its Resolver answers followers with inboxes. It is never started.
func webEnqueuer(t *testing.T, st store.Store, inboxes ...string) *Queue {
	t.Helper()
	web := newCountingResolver()
	web.set(followers, inboxes...)
	q, err := New(st, &sendertest.Fake{}, &Config{Resolver: web, Logger: quietLogger()})
	require.NoError(t, err)
	return q
}

func (r *countingResolver) callsFor(audience string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[audience]
}

func post(n int) Activity {
	a := note(n)
	a.Audiences = []string{followers}
	return a
}

func TestAudiencesResolvedOncePerAudienceCachedAndInvalidated(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(epoch)
	st := newMemory()
	res := newCountingResolver()
	res.set(followers, "https://a.example/users/1/inbox", "https://a.example/users/2/inbox", "https://b.example/inbox", "not a URL")
	fake := &sendertest.Fake{}
	cfg := testConfig()
	cfg.Resolver = res
	cfg.ResolverTTL = time.Minute
	cfg.clock = clk
	q := startQueue(t, st, fake, cfg)

	// No AddDomains: the domains an audience reaches are registered with
	// the activity.
	enqueueAll(t, q, post(1), post(2), post(3))
	eventually(t, func() bool { return fake.DeliveredCount() == 9 }, "3 activities to 3 inboxes")
	require.Len(t, fake.Delivered("https://a.example/users/1/inbox"), 3)
	require.Len(t, fake.Delivered("https://a.example/users/2/inbox"), 3)
	require.Len(t, fake.Delivered("https://b.example/inbox"), 3)
	require.Equal(t, 1, res.callsFor(followers), "one question per audience while cached, whatever the domains")

	// A new follower on a domain never seen: invalidation makes it count at
	// once.
	res.set(followers, "https://a.example/users/1/inbox", "https://a.example/users/2/inbox", "https://b.example/inbox", "https://c.example/inbox")
	q.InvalidateAudience(followers)
	enqueueAll(t, q, post(4))
	eventually(t, func() bool { return len(fake.Delivered("https://c.example/inbox")) == 1 }, "new follower reached after invalidation")
	require.Equal(t, 2, res.callsFor(followers))

	// Without invalidation, the cache holds for the TTL, then expires.
	res.set(followers, "https://a.example/users/1/inbox", "https://a.example/users/2/inbox", "https://c.example/inbox")
	enqueueAll(t, q, post(5))
	eventually(t, func() bool { return len(fake.Delivered("https://b.example/inbox")) == 5 }, "cached answer used within the TTL")
	// Every worker must be done with post(5) before the clock moves: a
	// worker resolves its domain's inboxes when it sends, and one still
	// holding post(5) would ask the Resolver again after the TTL.
	eventually(t, func() bool { return fake.DeliveredCount() == 17 }, "post(5) delivered to all four inboxes")
	clk.Advance(time.Minute)
	enqueueAll(t, q, post(6))
	eventually(t, func() bool { return len(fake.Delivered("https://c.example/inbox")) == 3 }, "delivered to the rest")
	require.Len(t, fake.Delivered("https://b.example/inbox"), 5, "expired answer asked again: no follower left on b.example")
	require.Equal(t, 3, res.callsFor(followers))
}

func TestWorkersAndResolverCostFollowTheAddressedDomains(t *testing.T) {
	t.Parallel()
	const known = 200
	st := newMemory()
	res := newCountingResolver()
	res.set(followers, "https://busy.example/users/1/inbox")
	fake := &sendertest.Fake{}
	cfg := testConfig()
	cfg.Resolver = res
	q := startQueue(t, st, fake, cfg)
	var regs []store.DomainRegistration
	for i := range known {
		regs = append(regs, store.DomainRegistration{SharedInbox: fmt.Sprintf("https://idle%d.example/inbox", i)})
	}
	require.NoError(t, q.RegisterDomains(context.Background(), regs))
	eventually(t, func() bool { return q.workerCount() == known }, "every known domain leased")
	// Let the workers settle into waiting before counting.
	eventually(t, func() bool {
		for _, w := range q.workerList() {
			if !w.snapshot().CaughtUp {
				return false
			}
		}
		return true
	}, "every worker caught up")
	before := make(map[string]int64)
	for _, w := range q.workerList() {
		before[w.domain] = w.wakes.Load()
	}

	for i := range 20 {
		enqueueAll(t, q, note(i, "https://busy.example/users/1/inbox"), post(100+i))
	}
	eventually(t, func() bool { return fake.DeliveredCount() == 40 }, "delivered to the one addressed domain")
	for _, w := range q.workerList() {
		if w.domain == "busy.example" {
			continue
		}
		require.Equal(t, before[w.domain], w.wakes.Load(), "%s was woken by activities not addressed to it", w.domain)
	}
	require.Equal(t, 1, res.callsFor(followers), "one Resolver call for 20 activities and 201 known domains")
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

func TestInboxesTheResolverNamesButCannotBeReachedAreDeadLetters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newMemory()
	res := newCountingResolver()
	res.set(followers,
		"https://a.example/users/1/inbox",
		"http://a.example/users/2/inbox",    // plain http: refused, on a.example
		"https://bob@b.example/inbox",       // user info: refused, on b.example
		"https://c.example/users/3/inbox#x", // refused, but c.example has a shared inbox
		"not a URL",                         // no domain to record it on: logged
	)
	const mentions = "https://local.example/activities/1/mentions"
	res.set(mentions, "http://a.example/users/2/inbox") // refused again: one dead letter
	fake := &sendertest.Fake{}
	cfg := testConfig()
	cfg.Resolver = res
	q := startQueue(t, st, fake, cfg)
	require.NoError(t, q.SetSharedInbox(ctx, "https://c.example/inbox"))
	p := post(1)
	p.Audiences = append(p.Audiences, mentions)
	ids := enqueueAll(t, q, p)

	eventually(t, func() bool { return fake.DeliveredCount() == 2 }, "the usable inbox and the shared one")
	require.Len(t, fake.Delivered("https://a.example/users/1/inbox"), 1)
	require.Len(t, fake.Delivered("https://c.example/inbox"), 1)
	for dom, want := range map[string]struct{ inbox, reason string }{
		"a.example": {"http://a.example/users/2/inbox", `scheme "http" not allowed`},
		"b.example": {"https://bob@b.example/inbox", "has user info"},
	} {
		eventually(t, func() bool { return deadLetterCount(t, st, dom) == 1 }, "the refused inbox on %s is recorded", dom)
		dls, err := st.DeadLetters(ctx, storeFilter(dom))
		require.NoError(t, err)
		require.Equal(t, ids[0], dls[0].ActivityID)
		require.Equal(t, want.inbox, dls[0].Inbox)
		require.Contains(t, dls[0].Reason, "the Resolver named an inbox that cannot be delivered to")
		require.Contains(t, dls[0].Reason, want.reason)
	}
	require.Zero(t, deadLetterCount(t, st, "c.example"), "reached through its shared inbox")
	require.Len(t, fake.Calls(), 2, "nothing sent to a refused inbox")
	stats, err := q.Stats(ctx)
	require.NoError(t, err)
	for _, d := range stats.Domains {
		if d.Domain == "a.example" {
			require.EqualValues(t, 1, d.DeadLettered, "the inbox two audiences name is recorded once")
		}
	}
}

func TestResolverFailuresShowInStatsAndAreRetried(t *testing.T) {
	t.Parallel()
	st := newMemory()
	// Enqueued by another process, whose Resolver answered; this one's
	// fails until the test lets it answer.
	enqueuer := webEnqueuer(t, st, "https://a.example/users/1/inbox")
	enqueueAll(t, enqueuer, post(1))
	var failing atomic.Bool
	failing.Store(true)
	var calls atomic.Int32
	cfg := testConfig()
	cfg.Resolver = ResolverFunc(func(ctx context.Context, audience string) ([]string, error) {
		calls.Add(1)
		if failing.Load() {
			return nil, errors.New("followers table unreachable")
		}
		return []string{"https://a.example/users/1/inbox"}, nil
	})
	fake := &sendertest.Fake{}
	q := startQueue(t, st, fake, cfg)

	blocked := func() string {
		s, err := q.Stats(context.Background())
		require.NoError(t, err)
		for _, d := range s.Domains {
			if d.Domain == "a.example" {
				return d.Blocked
			}
		}
		return ""
	}
	eventually(t, func() bool { return strings.Contains(blocked(), "followers table unreachable") }, "the failure shows in Stats")
	rec := httptest.NewRecorder()
	q.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	require.Contains(t, rec.Body.String(), "blocked: resolving audiences: followers table unreachable")
	eventually(t, func() bool { return calls.Load() >= 3 }, "the resolution is retried")
	require.Zero(t, fake.DeliveredCount())

	failing.Store(false)
	eventually(t, func() bool { return len(fake.Delivered("https://a.example/users/1/inbox")) == 1 }, "delivered once the Resolver answers")
	eventually(t, func() bool { return blocked() == "" }, "no longer blocked")
}

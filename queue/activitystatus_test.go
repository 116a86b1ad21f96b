package queue

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

// statusSender answers per domain: ok.example and paused.example accept,
// gone.example's personal inbox is gone, failing.example fails until
// healed, dead.example's shared inbox answers 410 Gone.
func statusSender(healed *atomic.Bool) *sendertest.Fake {
	return &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		switch d.Domain {
		case "gone.example":
			return sender.Result{Outcome: sender.InboxGone, Status: http.StatusGone, Reason: "410 Gone"}
		case "failing.example":
			if !healed.Load() {
				return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
			}
		case "dead.example":
			return sender.Result{Outcome: sender.DomainGone, Status: http.StatusGone, Reason: "410 Gone"}
		}
		return sender.Success(http.StatusAccepted)
	}}
}

// byDomain indexes an activity's status by domain.
func byDomain(t *testing.T, s ActivityStatus) map[string]DomainDelivery {
	t.Helper()
	out := make(map[string]DomainDelivery)
	for i, d := range s.Domains {
		if i > 0 {
			require.Less(t, s.Domains[i-1].Domain, d.Domain, "sorted by domain")
		}
		out[d.Domain] = d
	}
	return out
}

func TestActivityStatusReportsEveryAddressedDomain(t *testing.T) {
	t.Parallel()
	st := newMemory()
	var healed atomic.Bool
	fake := statusSender(&healed)
	cfg := testConfig()
	cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour // the failing delivery waits
	ctx := context.Background()
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	require.NoError(t, q.SetSharedInbox(ctx, "https://dead.example/inbox"))
	require.NoError(t, q.AddDomains(ctx, "paused.example", "other.example"))
	require.NoError(t, q.Pause(ctx, "paused.example")) // before it has an owner
	require.NoError(t, q.Start(ctx))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })
	inboxes := []string{
		"https://ok.example/users/a/inbox", "https://gone.example/users/b/inbox", "https://failing.example/users/c/inbox",
		"https://paused.example/users/d/inbox", "https://dead.example/users/e/inbox",
	}
	ids := enqueueAll(t, q, note(1, inboxes...))
	id := ids[0]
	check := func(s ActivityStatus, live bool) {
		t.Helper()
		require.Equal(t, id, s.ID)
		require.False(t, s.Pruned)
		require.False(t, s.EnqueuedAt.IsZero())
		got := byDomain(t, s)
		require.Len(t, got, 5, "the addressed domains, not other.example")
		for _, d := range got {
			require.Equal(t, live, d.Live, d.Domain)
		}
		require.Equal(t, DeliveryDelivered, got["ok.example"].State)

		gone := got["gone.example"]
		require.Equal(t, DeliveryDeadLettered, gone.State)
		require.Len(t, gone.DeadLetters, 1)
		require.Equal(t, InboxGoneReason+"410 Gone", gone.Reason)
		require.Equal(t, "https://gone.example/users/b/inbox", gone.DeadLetters[0].Inbox)
		require.Equal(t, http.StatusGone, gone.DeadLetters[0].Status)

		failing := got["failing.example"]
		require.Equal(t, DeliveryPending, failing.State)
		require.Equal(t, store.StatusActive, failing.DomainStatus)
		require.Equal(t, 1, failing.Attempts)
		require.Equal(t, "500 Internal Server Error", failing.LastError)
		require.WithinDuration(t, time.Now().Add(time.Hour), failing.NextAttemptAt, 10*time.Minute)

		paused := got["paused.example"]
		require.Equal(t, DeliveryPaused, paused.State)
		require.Equal(t, store.StatusPaused, paused.DomainStatus)
		require.Zero(t, paused.Attempts)

		dead := got["dead.example"]
		require.Equal(t, DeliveryDomainDead, dead.State)
		require.Equal(t, store.StatusDead, dead.DomainStatus)
		require.Contains(t, dead.Reason, "waits for a probe")
		require.Equal(t, 2, s.Count(DeliveryPending)+s.Count(DeliveryDelivered))
	}

	eventually(t, func() bool {
		s, err := q.ActivityStatus(ctx, id)
		require.NoError(t, err)
		got := byDomain(t, s)
		for _, d := range got {
			if !d.Live {
				return false // its worker has not started yet: it is leased in a round of its own
			}
		}
		return got["ok.example"].State == DeliveryDelivered && got["gone.example"].State == DeliveryDeadLettered &&
			got["failing.example"].LastError != "" && got["dead.example"].State == DeliveryDomainDead
	}, "every domain worked here and answered once")
	s, err := q.ActivityStatus(ctx, id)
	require.NoError(t, err)
	check(s, true) // this process works every domain: its live view

	// Another process sees the same from the store once it is saved.
	other, err := New(st, fake, cfg)
	require.NoError(t, err)
	require.NoError(t, q.Stop(ctx))
	s, err = other.ActivityStatus(ctx, id)
	require.NoError(t, err)
	check(s, false)

	// Healed, resumed: the rest goes out.
	healed.Store(true)
	require.NoError(t, q.Resume(ctx, "paused.example"))
	require.NoError(t, q.RetryNow(ctx, "failing.example"))
	require.NoError(t, q.Start(ctx))
	eventually(t, func() bool {
		s, err := q.ActivityStatus(ctx, id)
		require.NoError(t, err)
		return s.Count(DeliveryDelivered) == 3
	}, "delivered to the healed and the resumed domains")
}

func TestActivityStatusOfUnknownIDs(t *testing.T) {
	t.Parallel()
	q := startQueue(t, newMemory(), &sendertest.Fake{}, testConfig())
	ctx := context.Background()
	ids := enqueueAll(t, q, note(1, "https://a.example/inbox"))
	for _, id := range []int64{0, -1, ids[0] + 1, 1 << 40} {
		_, err := q.ActivityStatus(ctx, id)
		require.ErrorIs(t, err, store.ErrNotFound, "activity %d", id)
	}
	_, err := q.ActivityStatus(ctx, ids[0])
	require.NoError(t, err)
}

func TestActivityStatusOfPrunedActivity(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := refusingDomainSender("refusing.example")
	cfg := testConfig()
	cfg.PruneInterval = -1 // pruned by the test
	q := startQueue(t, st, fake, cfg)
	ctx := context.Background()
	ids := enqueueAll(t, q,
		note(1, "https://ok.example/inbox", "https://refusing.example/inbox"),
		note(2, "https://ok.example/inbox"),
		note(3, "https://ok.example/inbox"))
	eventually(t, func() bool {
		return domainState(t, st, "ok.example").Cursor == ids[2] && domainState(t, st, "refusing.example").Cursor >= ids[0]
	}, "settled and saved")
	res, err := st.Prune(ctx)
	require.NoError(t, err)
	require.Equal(t, ids[2], res.Below)

	s, err := q.ActivityStatus(ctx, ids[0])
	require.NoError(t, err)
	require.True(t, s.Pruned)
	require.Len(t, s.Domains, 1, "only the dead letters are left to tell")
	require.Equal(t, "refusing.example", s.Domains[0].Domain)
	require.Equal(t, DeliveryDeadLettered, s.Domains[0].State)
	require.Equal(t, "422 Unprocessable Entity", s.Domains[0].Reason)
	require.Positive(t, s.Domains[0].DeadLetters[0].ID, "saved: it can be requeued")

	s, err = q.ActivityStatus(ctx, ids[1])
	require.NoError(t, err)
	require.True(t, s.Pruned)
	require.Empty(t, s.Domains)
	_, err = q.ActivityStatus(ctx, ids[2]+1)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestActivityStatusOfDeadDomainSkipped(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Domain == "dead.example" {
			return sender.Result{Outcome: sender.DomainGone, Status: http.StatusGone, Reason: "410 Gone"}
		}
		return sender.Success(202)
	}}
	q := startQueue(t, st, fake, testConfig())
	ctx := context.Background()
	require.NoError(t, q.SetSharedInbox(ctx, "https://dead.example/inbox"))
	ids := enqueueAll(t, q, note(1, "https://ok.example/inbox", "https://dead.example/inbox"))
	eventually(t, func() bool { return domainState(t, st, "dead.example").Status == store.StatusDead }, "marked dead")
	s, err := q.ActivityStatus(ctx, ids[0])
	require.NoError(t, err)
	require.Equal(t, DeliveryDomainDead, byDomain(t, s)["dead.example"].State)
	require.Contains(t, byDomain(t, s)["dead.example"].Reason, "waits for a probe")

	_, err = q.SkipToHead(ctx, "dead.example")
	require.NoError(t, err)
	eventually(t, func() bool {
		s, err := q.ActivityStatus(ctx, ids[0])
		require.NoError(t, err)
		return byDomain(t, s)["dead.example"].Reason != "the domain is dead: the activity waits for a probe to revive it"
	}, "the worker took the skip in")
	s, err = q.ActivityStatus(ctx, ids[0])
	require.NoError(t, err)
	d := byDomain(t, s)["dead.example"]
	require.Equal(t, DeliveryDomainDead, d.State, "settled, but never sent")
	require.Equal(t, "never sent: the domain is dead and its cursor was moved past the activity", d.Reason)
	require.Equal(t, DeliveryDelivered, byDomain(t, s)["ok.example"].State)
}

// readCounter counts the reads a caller makes, and the domain states
// they return.
type readCounter struct {
	store.Store
	mu           sync.Mutex
	calls        map[string]int
	domainsRead  int
	domainsNamed int
}

func (c *readCounter) count(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		c.calls = make(map[string]int)
	}
	c.calls[name]++
}

func (c *readCounter) Activities(ctx context.Context, after int64, limit int) ([]store.Activity, error) {
	c.count("Activities")
	return c.Store.Activities(ctx, after, limit)
}

func (c *readCounter) Head(ctx context.Context) (int64, error) {
	c.count("Head")
	return c.Store.Head(ctx)
}

func (c *readCounter) Domains(ctx context.Context, names []string) ([]store.DomainState, error) {
	c.count("Domains")
	out, err := c.Store.Domains(ctx, names)
	c.mu.Lock()
	c.domainsRead += len(out)
	c.domainsNamed += len(names)
	if len(names) == 0 {
		c.domainsNamed = -1 // every domain
	}
	c.mu.Unlock()
	return out, err
}

func (c *readCounter) DeadLetters(ctx context.Context, f store.DeadLetterFilter) ([]store.DeadLetter, error) {
	c.count("DeadLetters")
	if f.ActivityID == 0 {
		c.count("DeadLetters without ActivityID")
	}
	return c.Store.DeadLetters(ctx, f)
}

func (c *readCounter) reset() (calls map[string]int, domainsRead, domainsNamed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls, domainsRead, domainsNamed = c.calls, c.domainsRead, c.domainsNamed
	c.calls, c.domainsRead, c.domainsNamed = nil, 0, 0
	return calls, domainsRead, domainsNamed
}

func TestActivityStatusReadsFollowTheAddressedDomains(t *testing.T) {
	t.Parallel()
	type reads struct {
		calls        map[string]int
		domainsRead  int
		domainsNamed int
	}
	measure := func(known int) reads {
		st := &readCounter{Store: newMemory()}
		q, err := New(st, &sendertest.Fake{}, testConfig()) // not started: the store view
		require.NoError(t, err)
		ctx := context.Background()
		regs := make([]store.DomainRegistration, known)
		for i := range regs {
			regs[i] = store.DomainRegistration{Domain: fmt.Sprintf("known%d.example", i)}
		}
		require.NoError(t, st.RegisterDomains(ctx, regs))
		id, err := q.Enqueue(ctx, note(1, "https://a.example/inbox", "https://b.example/inbox", "https://c.example/inbox"))
		require.NoError(t, err)
		st.reset()
		s, err := q.ActivityStatus(ctx, id)
		require.NoError(t, err)
		require.Len(t, s.Domains, 3)
		calls, read, named := st.reset()
		return reads{calls, read, named}
	}
	few, many := measure(10), measure(10_000)
	require.Equal(t, few, many, "the same reads with 10 and with 10,000 known domains")
	require.Equal(t, 3, many.domainsRead, "only the addressed domains' states are read")
	require.Equal(t, 3, many.domainsNamed)
	require.Zero(t, many.calls["DeadLetters without ActivityID"])
	require.Equal(t, map[string]int{"Activities": 1, "Domains": 1, "DeadLetters": 1}, many.calls)
}

func TestActivityStatusOfAnActivityForAllDomains(t *testing.T) {
	t.Parallel()
	st := newMemory()
	q := startQueue(t, st, &sendertest.Fake{}, testConfig())
	ctx := context.Background()
	require.NoError(t, q.SetSharedInbox(ctx, "https://a.example/inbox"))
	require.NoError(t, q.SetSharedInbox(ctx, "https://b.example/inbox"))
	require.NoError(t, q.AddDomains(ctx, "noshared.example"))
	ids := enqueueAll(t, q, Activity{Body: note(1).Body, AllDomains: true})
	eventually(t, func() bool {
		s, err := q.ActivityStatus(ctx, ids[0])
		require.NoError(t, err)
		return s.Count(DeliveryPending) == 0
	}, "settled everywhere")
	s, err := q.ActivityStatus(ctx, ids[0])
	require.NoError(t, err)
	require.True(t, s.AllDomains)
	got := byDomain(t, s)
	require.Len(t, got, 3, "every known domain")
	require.Equal(t, DeliveryDelivered, got["a.example"].State)
	require.Equal(t, DeliveryDelivered, got["b.example"].State)
	require.Equal(t, DeliveryDeadLettered, got["noshared.example"].State)
	require.Contains(t, got["noshared.example"].Reason, "no shared inbox is known")
}

func TestActivityStatusOnASuspendedDomain(t *testing.T) {
	t.Parallel()
	st := newMemory()
	fake := &sendertest.Fake{}
	q, err := New(st, fake, testConfig())
	require.NoError(t, err)
	ctx := context.Background()
	_, err = q.Suspend(ctx, "blocked.example")
	require.NoError(t, err)
	require.NoError(t, q.Start(ctx))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })
	ids := enqueueAll(t, q, note(1, "https://ok.example/inbox", "https://blocked.example/inbox"))
	eventually(t, func() bool { return fake.DeliveredCount() == 1 }, "delivered where it may be")
	s, err := q.ActivityStatus(ctx, ids[0])
	require.NoError(t, err)
	got := byDomain(t, s)
	require.Equal(t, DeliveryDelivered, got["ok.example"].State)
	blocked := got["blocked.example"]
	require.Equal(t, DeliverySuspended, blocked.State)
	require.Equal(t, store.StatusSuspended, blocked.DomainStatus)
	require.Equal(t, "the domain is suspended: nothing is sent to it", blocked.Reason)

	// Suspended again, its cursor moves to the head: passed over for good.
	_, err = q.Suspend(ctx, "blocked.example")
	require.NoError(t, err)
	eventually(t, func() bool {
		s, err := q.ActivityStatus(ctx, ids[0])
		require.NoError(t, err)
		blocked = byDomain(t, s)["blocked.example"]
		return blocked.Reason != "the domain is suspended: nothing is sent to it"
	}, "the owner took the move in")
	require.Equal(t, DeliverySuspended, blocked.State)
	require.Equal(t, "never sent: the domain is suspended", blocked.Reason)
}

func TestActivityStatusOnAForgottenDomain(t *testing.T) {
	t.Parallel()
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Domain == "flaky.example" {
			return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
		}
		return sender.Success(202)
	}}
	cfg := testConfig()
	cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour
	q := startQueue(t, newMemory(), fake, cfg)
	ctx := context.Background()
	ids := enqueueAll(t, q, note(1, "https://ok.example/inbox", "https://flaky.example/inbox"))
	eventually(t, func() bool { return len(fake.Calls()) == 2 }, "tried on both")
	require.NoError(t, q.Forget(ctx, "flaky.example"))
	s, err := q.ActivityStatus(ctx, ids[0])
	require.NoError(t, err)
	got := byDomain(t, s)
	require.Equal(t, DeliveryDomainUnknown, got["flaky.example"].State)
	require.False(t, got["flaky.example"].Live)
	require.Equal(t, DeliveryDelivered, got["ok.example"].State)
}

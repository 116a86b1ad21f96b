package queue

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/memory"
)

// stuckSender answers 500 for ever to one activity per domain (its ID set
// in stuck) and accepts everything else.
func stuckSender(stuck *idSet) *sendertest.Fake {
	return &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if stuck.has(d.Activity.ID) {
			return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
		}
		return sender.Success(202)
	}}
}

// failingInboxSender answers 500 for ever to one inbox and accepts
// everything else.
func failingInboxSender(inbox string) *sendertest.Fake {
	return &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Inbox == inbox {
			return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
		}
		return sender.Success(202)
	}}
}

// callsTo returns how many attempts fake finished to inbox.
func callsTo(fake *sendertest.Fake, inbox string) int {
	n := 0
	for _, c := range fake.Calls() {
		if c.Inbox == inbox {
			n++
		}
	}
	return n
}

// firstOwnerWithAFailingInbox returns a store, a sender for which inbox
// keeps failing, a config that never gives up on it, and a queue on them,
// not started.
func firstOwnerWithAFailingInbox(t *testing.T, inbox string) (*memory.Store, *sendertest.Fake, *Config, *Queue) {
	t.Helper()
	st := newMemory()
	fake := failingInboxSender(inbox)
	cfg := testConfig()
	cfg.MaxAttempts = 1 << 30 // it stays pending throughout
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	return st, fake, cfg, q
}

// idSet is a set of activity IDs safe for concurrent use.
type idSet struct {
	ids atomic.Pointer[map[int64]bool]
}

func (m *idSet) set(ids ...int64) {
	s := make(map[int64]bool)
	for _, id := range ids {
		s[id] = true
	}
	m.ids.Store(&s)
}

func (m *idSet) has(id int64) bool {
	s := m.ids.Load()
	return s != nil && (*s)[id]
}

// requireNoResend fails if an activity other than the stuck ones was
// delivered to an inbox more than once.
func requireNoResend(t *testing.T, fake *sendertest.Fake, inboxes ...string) {
	t.Helper()
	for _, inbox := range inboxes {
		seen := make(map[int64]bool)
		for _, id := range fake.Delivered(inbox) {
			require.False(t, seen[id], "activity %d delivered to %s twice", id, inbox)
			seen[id] = true
		}
	}
}

func TestGracefulStopHandoverAndReloadResendNothing(t *testing.T) {
	t.Parallel()
	st := newMemory()
	var stuck idSet
	fake := stuckSender(&stuck)
	cfg := testConfig()
	cfg.MaxAttempts = 1 << 30 // the stuck ones stay pending throughout
	cfg.LeaseTTL = 600 * time.Millisecond
	inboxes := []string{"https://a.example/inbox", "https://b.example/inbox", "https://c.example/inbox", "https://d.example/inbox"}
	next := 0 // distinct objects: distinct ordering keys
	enqueueBoth := func(q *Queue, n int) []int64 {
		var acts []Activity
		for range n {
			acts = append(acts, note(next, inboxes[next%len(inboxes)]))
			next++
		}
		return enqueueAll(t, q, acts...)
	}
	q1, err := New(st, fake, cfg)
	require.NoError(t, err)
	ids := enqueueBoth(q1, 40)
	stuck.set(ids[:4]...) // the first activity of each domain
	require.NoError(t, q1.Start(context.Background()))
	eventually(t, func() bool { return fake.DeliveredCount() == 36 }, "everything but the stuck heads delivered")

	// An admin reload from another process.
	admin, err := New(st, &sendertest.Fake{}, cfg)
	require.NoError(t, err)
	require.NoError(t, admin.RetryNow(context.Background(), "a.example"))
	eventually(t, func() bool {
		q1.mu.Lock()
		defer q1.mu.Unlock()
		w := q1.workers["a.example"]
		return w != nil && w.revision.Load() == domainState(t, st, "a.example").Revision
	}, "the owner took the admin change in")

	// A graceful stop; the next owner goes on where it stopped.
	require.NoError(t, q1.Stop(context.Background()))
	for _, d := range []string{"a.example", "b.example", "c.example", "d.example"} {
		s := domainState(t, st, d)
		require.NotNil(t, s.Progress, "%s: the settled deliveries past the stuck one are saved", d)
	}
	q2 := startQueue(t, st, fake, cfg)
	enqueueBoth(q2, 10)
	eventually(t, func() bool { return fake.DeliveredCount() == 46 }, "the next owner delivers the new activities")

	// A handover: a second process takes its share of the domains.
	q3 := startQueue(t, st, fake, cfg)
	eventually(t, func() bool { return q2.workerCount() == 2 && q3.workerCount() == 2 }, "the domains are split")
	enqueueBoth(q3, 10)
	eventually(t, func() bool { return fake.DeliveredCount() == 56 }, "the new owners deliver the new activities")
	requireNoResend(t, fake, inboxes...)
}

// stuckAcrossOwners is one delivery that keeps failing, tried by two owners
// of its domain in turn.
type stuckAcrossOwners struct {
	st         *memory.Store
	fake       *sendertest.Fake
	stuck      idSet
	firstOwner atomic.Bool
	dispatched atomic.Int32
	// secondAnswers, when set, is closed when the second owner's attempts
	// may be answered.
	secondAnswers chan struct{}
}

// newStuckAcrossOwners sets cfg's Observer to count the stuck delivery's
// attempts, then to call observe (when not nil).
func newStuckAcrossOwners(cfg *Config, observe func(Event)) *stuckAcrossOwners {
	s := &stuckAcrossOwners{st: newMemory()}
	s.firstOwner.Store(true)
	s.fake = &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if !s.stuck.has(d.Activity.ID) {
			return sender.Success(202)
		}
		canceled := sender.Result{Outcome: sender.Retry, DomainLevel: true, Reason: "canceled"}
		if s.firstOwner.Load() && d.Attempt > 3 {
			// The first owner stops with its fourth attempt in flight:
			// cancelled, it is no answer and is not counted.
			<-ctx.Done()
			return canceled
		}
		if !s.firstOwner.Load() && s.secondAnswers != nil {
			select {
			case <-s.secondAnswers:
			case <-ctx.Done():
				return canceled
			}
		}
		return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
	}}
	cfg.Observer = ObserverFunc(func(_ context.Context, e Event) {
		if e.Kind == EventDispatched && s.stuck.has(e.ActivityID) {
			s.dispatched.Add(1)
		}
		if observe != nil {
			observe(e)
		}
	})
	return s
}

// answered counts the stuck delivery's attempts that were answered.
func (s *stuckAcrossOwners) answered() int {
	n := 0
	for _, c := range s.fake.Calls() {
		if s.stuck.has(c.ActivityID) && c.Result.Reason != "canceled" {
			n++
		}
	}
	return n
}

// firstOwnerStops enqueues the stuck activity, lets a first owner make three
// answered attempts, and stops it with a fourth in flight. It returns the
// activity's ID.
func (s *stuckAcrossOwners) firstOwnerStops(t *testing.T, cfg *Config) int64 {
	t.Helper()
	q1, err := New(s.st, s.fake, cfg)
	require.NoError(t, err)
	ids := enqueueAll(t, q1, note(1, "https://a.example/inbox"))
	s.stuck.set(ids[0])
	require.NoError(t, q1.Start(context.Background()))
	eventually(t, func() bool { return s.dispatched.Load() == 4 }, "three attempts by the first owner, and a fourth in flight")
	stopCtx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.NoError(t, q1.Stop(stopCtx))
	require.Equal(t, 3, s.answered(), "the first owner never saw another success: no dead letter yet")
	s.firstOwner.Store(false)
	return ids[0]
}

func TestAttemptsCountAcrossOwners(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.MaxAttempts = 5
	s := newStuckAcrossOwners(cfg, nil)
	id := s.firstOwnerStops(t, cfg)

	q2 := startQueue(t, s.st, s.fake, cfg)
	// The domain accepts other deliveries meanwhile.
	for i := 2; deadLetterCount(t, s.st, "a.example") == 0; i++ {
		enqueueAll(t, q2, note(i, "https://a.example/inbox"))
		eventually(t, func() bool { return len(s.fake.Delivered("https://a.example/inbox")) == i-1 }, "delivered")
		require.Less(t, i, 200, "never dead-lettered")
	}
	dls, err := s.st.DeadLetters(context.Background(), store.DeadLetterFilter{Domain: "a.example"})
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, id, dls[0].ActivityID)
	require.Equal(t, cfg.MaxAttempts, dls[0].Attempts, "attempts counted across owners")
	require.Equal(t, cfg.MaxAttempts, s.answered(), "exactly MaxAttempts answered requests in all")
}

// A delivery whose last allowed attempt is the first one a new owner makes
// is given up on at that attempt when the domain accepted others since the
// new owner took it over: the earlier owner's failures are not forgotten.
func TestTheLastAttemptCanBeTheNewOwnersFirst(t *testing.T) {
	t.Parallel()
	const other = "https://a.example/users/2/inbox"
	var closeOnce sync.Once
	othersDelivered := make(chan struct{})
	cfg := testConfig()
	cfg.MaxAttempts = 4
	s := newStuckAcrossOwners(cfg, func(e Event) {
		if e.Kind == EventDelivered && e.Inbox == other {
			closeOnce.Do(func() { close(othersDelivered) })
		}
	})
	// The new owner's attempt is answered once it has handled a success.
	s.secondAnswers = othersDelivered
	id := s.firstOwnerStops(t, cfg)

	// The new owner's first attempt is the fourth and last, and the domain
	// accepts another delivery before it is answered.
	q2 := startQueue(t, s.st, s.fake, cfg)
	enqueueAll(t, q2, note(2, other))
	eventually(t, func() bool { return deadLetterCount(t, s.st, "a.example") == 1 }, "a dead letter")
	dls, err := s.st.DeadLetters(context.Background(), storeFilter("a.example"))
	require.NoError(t, err)
	require.Equal(t, id, dls[0].ActivityID)
	require.Equal(t, cfg.MaxAttempts, dls[0].Attempts)
	require.Equal(t, cfg.MaxAttempts, s.answered(), "exactly MaxAttempts answered requests in all")
}

func TestStuckDeliveryDoesNotStallItsDomainPastTheCheckpointBatch(t *testing.T) {
	t.Parallel()
	st := newMemory()
	var stuck idSet
	fake := stuckSender(&stuck)
	cfg := testConfig()
	cfg.MaxAttempts = 1 << 30 // it stays pending throughout
	q, err := New(st, fake, cfg)
	require.NoError(t, err)
	var acts []Activity
	for i := range 300 { // three times CheckpointDeliveries and ReadBatch's old bound of 100
		acts = append(acts, note(i, "https://a.example/inbox"))
	}
	ids := enqueueAll(t, q, acts...)
	stuck.set(ids[0])
	require.NoError(t, q.Start(context.Background()))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })
	eventuallyCount(t, fake.DeliveredCount, 299, "everything behind the stuck delivery goes out (not held by the checkpoint batch)")
}

// An activity sent to two inboxes of a domain, one of which keeps failing,
// is not sent again to the other by the next owner.
func TestTheNextOwnerDoesNotResendToAnotherInboxOfTheActivity(t *testing.T) {
	t.Parallel()
	const failing, accepting = "https://a.example/users/2/inbox", "https://a.example/users/1/inbox"
	st, fake, cfg, q1 := firstOwnerWithAFailingInbox(t, failing)
	enqueueAll(t, q1, note(1, accepting, failing))
	require.NoError(t, q1.Start(context.Background()))
	eventually(t, func() bool { return len(fake.Delivered(accepting)) == 1 }, "delivered to the accepting inbox")
	require.NoError(t, q1.Stop(context.Background()))

	handover := time.Now()
	q2 := startQueue(t, st, fake, cfg)
	enqueueAll(t, q2, note(2, "https://a.example/users/3/inbox"))
	eventually(t, func() bool { return len(fake.Delivered("https://a.example/users/3/inbox")) == 1 }, "the next owner delivers")
	eventually(t, func() bool {
		for _, c := range fake.Calls() {
			if c.Inbox == failing && c.Started.After(handover) {
				return true
			}
		}
		return false
	}, "the next owner retries the failing inbox")
	require.Len(t, fake.Delivered(accepting), 1, "sent again to the inbox that accepted it")
}

// What settled behind a failing delivery, and left the pending list, is
// saved with the progress: whole activities as ranges, and an activity
// that also waits for its failing inbox as settled but for it (its many
// settled inboxes are not listed). The next owner sends none of it again.
func TestTheNextOwnerDoesNotResendWhatSettledBehindAFailingDelivery(t *testing.T) {
	t.Parallel()
	const failing, accepting = "https://a.example/users/2/inbox", "https://a.example/users/1/inbox"
	wide := []string{accepting, failing}
	for i := range 20 {
		wide = append(wide, fmt.Sprintf("https://a.example/users/%d/inbox", 10+i))
	}
	st, fake, cfg, q1 := firstOwnerWithAFailingInbox(t, failing)
	ids := enqueueAll(t, q1, note(1, failing), note(2, accepting), note(3, wide...), note(4, accepting))
	require.NoError(t, q1.Start(context.Background()))
	eventually(t, func() bool { return len(fake.Delivered(accepting)) == 3 && len(fake.Delivered(wide[len(wide)-1])) == 1 },
		"delivered to the accepting inboxes")
	require.NoError(t, q1.Stop(context.Background()))
	progress := domainState(t, st, "a.example").Progress
	require.NotNil(t, progress)
	require.NotEmpty(t, progress.Settled, "whole activities settled above the cursor")
	require.Equal(t, []int64{ids[2]}, progress.OthersSettled)
	require.Len(t, progress.Deliveries, 2, "the two deliveries to the failing inbox, not the settled inboxes")

	handover := time.Now()
	q2 := startQueue(t, st, fake, cfg)
	enqueueAll(t, q2, note(5, "https://a.example/users/3/inbox"))
	eventually(t, func() bool { return len(fake.Delivered("https://a.example/users/3/inbox")) == 1 }, "the next owner delivers")
	eventually(t, func() bool {
		retried := map[int64]bool{}
		for _, c := range fake.Calls() {
			if c.Inbox == failing && c.Started.After(handover) {
				retried[c.ActivityID] = true
			}
		}
		return len(retried) == 2
	}, "the next owner retries both deliveries to the failing inbox")
	require.Len(t, fake.Delivered(accepting), 3, "sent again to the inbox that accepted it")
	for _, inbox := range wide[2:] {
		require.Len(t, fake.Delivered(inbox), 1, "sent again to %s, which accepted it", inbox)
	}
}

// An activity saved as settled on every inbox of its domain but a failing
// one is not sent again to the inboxes that accepted it when the next
// owner's Resolver no longer names the failing one (its follower left).
func TestAPartlySettledActivityIsNotResentWhenItsFailingInboxLeaves(t *testing.T) {
	t.Parallel()
	const accepting, failing = "https://a.example/users/1/inbox", "https://a.example/users/2/inbox"
	st := newMemory()
	fake := failingInboxSender(failing)
	cfg := testConfig()
	cfg.MaxAttempts = 1 << 30
	before := newCountingResolver()
	before.set(followers, accepting, failing)
	cfg.Resolver = before
	q1, err := New(st, fake, cfg)
	require.NoError(t, err)
	ids := enqueueAll(t, q1, post(1))
	require.NoError(t, q1.Start(context.Background()))
	eventually(t, func() bool { return len(fake.Delivered(accepting)) == 1 }, "delivered to the accepting inbox")
	require.NoError(t, q1.Stop(context.Background()))

	next := *cfg
	after := newCountingResolver()
	after.set(followers, accepting)
	next.Resolver = after
	q2, err := New(st, fake, &next)
	require.NoError(t, err)
	require.NoError(t, q2.Start(context.Background()))
	later := enqueueAll(t, q2, note(2, accepting))
	eventually(t, func() bool { return len(fake.Delivered(accepting)) >= 2 }, "the next activity")
	require.NoError(t, q2.Stop(context.Background())) // what was sent has finished
	require.Equal(t, []int64{ids[0], later[0]}, fake.Delivered(accepting), "sent again to the inbox that accepted it")
}

// An activity saved as settled on every inbox of its domain but a failing
// one is sent to the domain's shared inbox when the next owner knows one
// that replaces both: the saved progress says nothing of the new inbox.
func TestASharedInboxLearnedSinceGetsThePartlySettledActivity(t *testing.T) {
	t.Parallel()
	const failing, accepting, shared = "https://a.example/users/2/inbox", "https://a.example/users/1/inbox", "https://a.example/inbox"
	st := newMemory()
	fake := failingInboxSender(failing)
	cfg := testConfig()
	cfg.MaxAttempts = 1 << 30
	q1, err := New(st, fake, cfg)
	require.NoError(t, err)
	ids := enqueueAll(t, q1, note(1, accepting, failing))
	require.NoError(t, q1.Start(context.Background()))
	eventually(t, func() bool { return len(fake.Delivered(accepting)) == 1 }, "delivered to the accepting inbox")
	require.NoError(t, q1.Stop(context.Background()))
	require.Equal(t, []int64{ids[0]}, domainState(t, st, "a.example").Progress.OthersSettled)

	q2, err := New(st, fake, cfg)
	require.NoError(t, err)
	require.NoError(t, q2.SetSharedInbox(context.Background(), shared))
	require.NoError(t, q2.Start(context.Background()))
	t.Cleanup(func() { _ = q2.Stop(context.Background()) })
	eventually(t, func() bool { return len(fake.Delivered(shared)) == 1 }, "sent to the shared inbox")
}

// A dead letter recorded for an inbox the activity cannot be sent to, with
// no request made, is saved with the progress like a settled delivery: the
// next owner, reading the activity again behind a delivery still pending,
// does not record it again.
func TestUndeliverableInboxesAreRecordedOnceAcrossOwners(t *testing.T) {
	t.Parallel()
	const inbox = "https://a.example/users/1/inbox"
	for _, tc := range []struct {
		name string
		// activities returns what is enqueued, in order: the last one is
		// the one with the inbox it cannot be sent to.
		activities func() []Activity
		stuck      func(ids []int64) int64 // the delivery that stays pending
	}{{
		name: "addressed to all domains, no shared inbox, behind a stuck delivery",
		activities: func() []Activity {
			return []Activity{note(1, inbox), {Body: note(2).Body, AllDomains: true}}
		},
		stuck: func(ids []int64) int64 { return ids[0] },
	}, {
		name: "a refused inbox beside one that stays pending",
		activities: func() []Activity {
			return []Activity{post(1)}
		},
		stuck: func(ids []int64) int64 { return ids[0] },
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := newMemory()
			res := newCountingResolver()
			res.set(followers, inbox, "http://a.example/users/2/inbox") // plain http: refused
			var stuck idSet
			fake := stuckSender(&stuck)
			var deadLetterEvents atomic.Int32
			cfg := testConfig()
			cfg.Resolver = res
			cfg.MaxAttempts = 1 << 30 // the stuck one stays pending throughout
			cfg.Observer = ObserverFunc(func(_ context.Context, e Event) {
				if e.Kind == EventDeadLetter {
					deadLetterEvents.Add(1)
				}
			})
			q1, err := New(st, fake, cfg)
			require.NoError(t, err)
			ids := enqueueAll(t, q1, tc.activities()...)
			stuck.set(tc.stuck(ids))
			require.NoError(t, q1.Start(context.Background()))
			eventually(t, func() bool { return deadLetterCount(t, st, "a.example") == 1 }, "the dead letter is saved")
			require.NoError(t, q1.Stop(context.Background()))
			require.EqualValues(t, 1, deadLetterEvents.Load())

			// The next owner reads the activity again, behind the stuck
			// delivery, and delivers one enqueued after it.
			q2 := startQueue(t, st, fake, cfg)
			later := enqueueAll(t, q2, note(3, "https://a.example/users/3/inbox"))
			eventually(t, func() bool { return len(fake.Delivered("https://a.example/users/3/inbox")) == 1 }, "the activity after it")
			require.Equal(t, later[0], fake.Delivered("https://a.example/users/3/inbox")[0])
			require.EqualValues(t, 1, deadLetterEvents.Load(), "the next owner recorded the dead letter again")
			require.Equal(t, 1, deadLetterCount(t, st, "a.example"))
			stats, err := q2.Stats(context.Background())
			require.NoError(t, err)
			require.Zero(t, stats.Domains[0].DeadLettered)
		})
	}
}

// An activity with more inboxes on a domain than MaxPendingPerDomain, whose
// last inbox keeps failing, does not hold the domain: the inboxes settled
// before it (delivered, or refused as undeliverable) leave the pending
// deliveries, the domain reads on and delivers what follows, and the
// failing inbox is given up on after MaxAttempts.
func TestAWideActivityWithAFailingInboxDoesNotHoldItsDomain(t *testing.T) {
	t.Parallel()
	const failing = "https://a.example/users/5/inbox"
	for _, tc := range []struct {
		name        string
		activity    Activity
		inboxes     []string // the Resolver's answer for the followers
		deadLetters int
	}{{
		name: "delivered to the others",
		activity: note(1, "https://a.example/users/1/inbox", "https://a.example/users/2/inbox",
			"https://a.example/users/3/inbox", "https://a.example/users/4/inbox", failing),
		deadLetters: 1,
	}, {
		name:        "the others refused",
		activity:    post(1),
		inboxes:     []string{"http://a.example/users/1/inbox", "http://a.example/users/2/inbox", "http://a.example/users/3/inbox", failing},
		deadLetters: 4,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := newMemory()
			fake := failingInboxSender(failing)
			res := newCountingResolver()
			res.set(followers, tc.inboxes...)
			cfg := testConfig()
			cfg.Resolver = res
			cfg.MaxPendingPerDomain = 4
			cfg.MaxAttempts = 3
			q := startQueue(t, st, fake, cfg)
			enqueueAll(t, q, tc.activity)
			eventually(t, func() bool { return callsTo(fake, failing) > 0 }, "the failing inbox is tried")
			enqueueAll(t, q, note(2, "https://a.example/users/9/inbox"))
			eventually(t, func() bool { return len(fake.Delivered("https://a.example/users/9/inbox")) == 1 }, "the next activity")
			eventually(t, func() bool { return deadLetterCount(t, st, "a.example") == tc.deadLetters }, "the failing inbox is given up on")
			attempts := callsTo(fake, failing)
			// One more when the next activity's success came after the
			// last allowed attempt (the rule waits for one).
			require.GreaterOrEqual(t, attempts, cfg.MaxAttempts)
		})
	}
}

// While one inbox of an activity keeps failing, the activity is delivered
// to its other inboxes on the domain, and, when it has more inboxes there
// than MaxPendingPerDomain, leaves room for the activities after it: the
// domain does not wait for that inbox's retries. An activity with the same
// ordering key still waits for it.
func TestAFailingInboxDoesNotHoldTheRestOfItsActivity(t *testing.T) {
	t.Parallel()
	const failing = "https://a.example/users/0/inbox"
	others := []string{"https://a.example/users/1/inbox", "https://a.example/users/2/inbox",
		"https://a.example/users/3/inbox", "https://a.example/users/4/inbox"}
	const next = "https://a.example/users/9/inbox"
	fake := failingInboxSender(failing)
	cfg := testConfig()
	cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour // one attempt at the failing inbox in this test
	cfg.MaxPendingPerDomain = len(others)
	q := startQueue(t, newMemory(), fake, cfg)
	first := note(1, append([]string{failing}, others...)...)
	sameObject := keyed(2, "https://local.example/notes/1", others[0]) // note 1's ordering key
	enqueueAll(t, q, first, sameObject)
	eventually(t, func() bool { return callsTo(fake, failing) > 0 }, "the failing inbox is tried")
	enqueueAll(t, q, note(3, next)) // read once the room is free again
	eventually(t, func() bool { return len(fake.Delivered(next)) == 1 }, "the activity after it is delivered")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	require.NoError(t, q.Stop(ctx)) // what was sent has finished
	for _, inbox := range others {
		require.Equal(t, []int64{1}, fake.Delivered(inbox), "its other inboxes, and not the activity with its ordering key")
	}
	attempts := callsTo(fake, failing)
	require.Equal(t, 1, attempts, "the failing inbox waits for its retry")
}

// Deliveries settled behind one that keeps failing leave the pending list,
// wherever they are in it: the domain reads on and delivers what follows,
// and the failing one is given up on. Here the failing inbox answers only
// after the others, so that no success comes after its first failure but
// from what is read next.
func TestSettledDeliveriesBehindAFailingOneLeaveRoom(t *testing.T) {
	t.Parallel()
	inbox := func(i int) string { return fmt.Sprintf("https://a.example/users/%d/inbox", i) }
	broken := inbox(0)
	wide := []string{broken, inbox(1), inbox(2), inbox(3), inbox(4), inbox(5)}
	for _, tc := range []struct {
		name        string
		acts        []Activity
		others      int // successes before the broken inbox answers
		deadLetters int
	}{{
		name:        "single inboxes",
		acts:        []Activity{note(1, broken), note(2, inbox(1)), note(3, inbox(2)), note(4, inbox(3))},
		others:      3,
		deadLetters: 1,
	}, {
		name:        "two activities to the broken inbox and five others",
		acts:        []Activity{note(1, wide...), note(2, wide...)},
		others:      10,
		deadLetters: 2,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var succeeded atomic.Int32
			othersDone := make(chan struct{})
			fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
				if d.Inbox != broken {
					if succeeded.Add(1) == int32(tc.others) {
						close(othersDone)
					}
					return sender.Success(202)
				}
				select {
				case <-othersDone:
				case <-ctx.Done():
				}
				return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
			}}
			st := newMemory()
			cfg := testConfig()
			cfg.MaxPendingPerDomain = 4
			cfg.MaxAttempts = 3
			q := startQueue(t, st, fake, cfg)
			enqueueAll(t, q, tc.acts...)
			eventually(t, func() bool { return callsTo(fake, broken) > 0 }, "the broken inbox answered")
			enqueueAll(t, q, note(9, inbox(9)))
			eventually(t, func() bool { return len(fake.Delivered(inbox(9))) == 1 }, "the next activity is delivered")
			eventually(t, func() bool { return deadLetterCount(t, st, "a.example") == tc.deadLetters }, "the broken inbox is given up on")
		})
	}
}

// Successes answered while a delivery's failing attempt was in flight show
// that the domain works: the delivery is given up on after MaxAttempts
// even when nothing else comes for the domain after.
func TestSuccessesWhileTheFailingAttemptWasInFlightCount(t *testing.T) {
	t.Parallel()
	const broken, accepting = "https://a.example/users/0/inbox", "https://a.example/users/1/inbox"
	var q atomic.Pointer[Queue]
	accepted := func() bool { // the worker has handled the success
		st, err := q.Load().Stats(context.Background())
		if err != nil {
			return false
		}
		for _, d := range st.Domains {
			if d.Domain == "a.example" && d.Delivered > 0 {
				return true
			}
		}
		return false
	}
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Inbox != broken {
			return sender.Success(202)
		}
		for d.Attempt == 1 && !accepted() {
			select {
			case <-ctx.Done():
				return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "cancelled"}
			case <-time.After(time.Millisecond):
			}
		}
		return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
	}}
	st := newMemory()
	cfg := testConfig()
	cfg.MaxAttempts = 3
	qq, err := New(st, fake, cfg)
	require.NoError(t, err)
	q.Store(qq)
	enqueueAll(t, qq, note(1, broken), note(2, accepting)) // sent together: the limit starts at InitialInFlightLimit
	require.NoError(t, qq.Start(context.Background()))
	t.Cleanup(func() { _ = qq.Stop(context.Background()) })
	eventually(t, func() bool { return deadLetterCount(t, st, "a.example") == 1 }, "the broken inbox is given up on")
}

// A domain whose room for pending deliveries is filled, in one read, by
// deliveries settled as they are read (inboxes it cannot send to) reads on
// and delivers what comes next, and Drain sees it idle.
func TestDeliveriesSettledAsTheyAreReadDoNotPutTheDomainToSleep(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		config      func(*Config)
		enqueue     func(t *testing.T, q *Queue)
		deadLetters int
	}{{
		name:   "refused inboxes fill MaxPendingPerDomain",
		config: func(c *Config) { c.MaxPendingPerDomain = 2 },
		enqueue: func(t *testing.T, q *Queue) {
			enqueueAll(t, q, post(1)) // the Resolver names two plain-http inboxes
		},
		deadLetters: 2,
	}, {
		name:   "an AllDomains activity fills MaxPendingBytesPerDomain",
		config: func(c *Config) { c.MaxPendingBytesPerDomain = 1 },
		enqueue: func(t *testing.T, q *Queue) {
			require.NoError(t, q.AddDomains(t.Context(), "a.example")) // no shared inbox known
			enqueueAll(t, q, Activity{Body: note(1).Body, AllDomains: true})
		},
		deadLetters: 1,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := newMemory()
			res := newCountingResolver()
			res.set(followers, "http://a.example/users/1/inbox", "http://a.example/users/2/inbox")
			fake := &sendertest.Fake{}
			cfg := testConfig()
			cfg.Resolver = res
			tc.config(cfg)
			q := startQueue(t, st, fake, cfg)
			tc.enqueue(t, q)
			eventually(t, func() bool { return deadLetterCount(t, st, "a.example") == tc.deadLetters }, "the dead letters")
			enqueueAll(t, q, note(2, "https://a.example/users/9/inbox"))
			eventually(t, func() bool { return len(fake.Delivered("https://a.example/users/9/inbox")) == 1 }, "the next activity")
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			require.NoError(t, q.Drain(ctx))
		})
	}
}

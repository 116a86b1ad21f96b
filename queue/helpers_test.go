package queue

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/memory"
)

const testActor = "https://local.example/users/alice"

// quietLogger keeps test output readable; set APQUEUE_TEST_LOG=1 to see logs.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is a configuration that reacts quickly, for tests.
func testConfig() *Config {
	return &Config{
		BackoffMin:         10 * time.Millisecond,
		BackoffMax:         50 * time.Millisecond,
		BackoffJitter:      -1,
		LeaseTTL:           3 * time.Second,
		CheckpointInterval: 20 * time.Millisecond,
		PollInterval:       time.Hour, // prove wake-ups, not polling
		Logger:             quietLogger(),
		// Limits grow on answers alone, however loaded the test machine.
		cpuSaturated: func() bool { return false },
	}
}

// note returns a Create of note n, ordered by the note.
func note(n int, inboxes ...string) Activity {
	return Activity{
		Body:    fmt.Appendf(nil, `{"id":"https://local.example/activities/%d","type":"Create","actor":%q,"object":"https://local.example/notes/%d"}`, n, testActor, n),
		Inboxes: inboxes,
	}
}

// keyed returns an activity with the given ordering key.
func keyed(n int, key string, inboxes ...string) Activity {
	a := note(n, inboxes...)
	a.OrderingKey = key
	return a
}

// startQueue creates and starts a queue and stops it when the test ends.
func startQueue(t *testing.T, st store.Store, snd sender.Sender, cfg *Config) *Queue {
	t.Helper()
	q, err := New(st, snd, cfg)
	require.NoError(t, err)
	require.NoError(t, q.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := q.Stop(ctx)
		if err != nil && err != ErrNotStarted {
			t.Errorf("stop: %v", err)
		}
	})
	return q
}

// startWithADomain starts a queue on st with a fake sender and
// Config.StoreTimeout at 100 ms, adds a.example, and waits for its worker.
func startWithADomain(t *testing.T, st store.Store) (*Queue, *sendertest.Fake) {
	t.Helper()
	fake := &sendertest.Fake{}
	cfg := testConfig()
	cfg.StoreTimeout = 100 * time.Millisecond
	q := startQueue(t, st, fake, cfg)
	require.NoError(t, q.AddDomains(t.Context(), "a.example"))
	eventually(t, func() bool { return q.workerCount() == 1 }, "a worker for the domain")
	return q, fake
}

func enqueueAll(t *testing.T, q *Queue, acts ...Activity) []int64 {
	t.Helper()
	ids, err := q.EnqueueMany(context.Background(), acts)
	require.NoError(t, err)
	return ids
}

// domainState reads a domain's saved state from the store.
func domainState(t *testing.T, st store.Store, dom string) store.DomainState {
	t.Helper()
	states, err := st.Domains(context.Background(), []string{dom})
	require.NoError(t, err)
	require.Len(t, states, 1, "domain %s unknown", dom)
	return states[0]
}

func newMemory() *memory.Store { return memory.New() }

// eventually waits for cond with a tight bound.
func eventually(t *testing.T, cond func() bool, msg string, args ...any) {
	t.Helper()
	require.Eventually(t, cond, 5*time.Second, 2*time.Millisecond, append([]any{msg}, args...)...)
}

// eventuallyCount waits for count to reach want, for as long as it keeps
// moving: a bulk delivery is slow on a loaded machine, not stuck. It fails
// when count passes want (something sent twice) or stands still for the
// bound of eventually.
func eventuallyCount(t *testing.T, count func() int, want int, msg string, args ...any) {
	t.Helper()
	last, moved := -1, time.Now()
	for {
		n := count()
		if n == want {
			return
		}
		require.Less(t, n, want, append([]any{msg}, args...)...)
		if n != last {
			last, moved = n, time.Now()
		} else if time.Since(moved) > 5*time.Second {
			require.FailNowf(t, "stalled", "%d of %d for 5s: "+msg, append([]any{n, want}, args...)...)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// refusingDomainSender is a fake sender to which domain answers 422 for
// good, and every other domain 202.
func refusingDomainSender(domain string) *sendertest.Fake {
	return &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Domain == domain {
			return sender.Result{Outcome: sender.Permanent, Status: 422, Reason: "422 Unprocessable Entity"}
		}
		return sender.Success(202)
	}}
}

func storeFilter(dom string) store.DeadLetterFilter { return store.DeadLetterFilter{Domain: dom} }

// inflightNow returns the requests in flight as last published, for tests.
func (w *worker) inflightNow() int { return w.snapshot().InFlight }

// snapshot returns what the worker last published.
func (w *worker) snapshot() DomainStats { return *w.view.Load() }

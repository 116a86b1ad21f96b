// This file holds the helpers the database stores' own queue tests share:
// a quick queue configuration, activities, a detector of two processes
// working one domain at once, and checks of the domains' owners and
// cursors.

package queuetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

// QuietLogger discards everything, so that test output stays readable.
func QuietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Config reacts quickly, and relies on the store's wake-ups rather than
// polling.
func Config(owner string) *queue.Config {
	return &queue.Config{
		OwnerID:            owner,
		BackoffMin:         10 * time.Millisecond,
		BackoffMax:         200 * time.Millisecond,
		BackoffJitter:      -1,
		LeaseTTL:           time.Second,
		CheckpointInterval: 20 * time.Millisecond,
		PollInterval:       time.Hour,
		SummaryInterval:    -1,
		Logger:             QuietLogger(),
	}
}

// Note is a Create of note n addressed to inboxes.
func Note(n int, inboxes ...string) queue.Activity {
	return queue.Activity{
		Body: fmt.Appendf(nil, `{"id":"https://local.example/activities/%d","type":"Create",`+
			`"actor":"https://local.example/users/alice","object":"https://local.example/notes/%d"}`, n, n),
		Inboxes: inboxes,
	}
}

// Start starts a queue and stops it when the test ends.
func Start(t testing.TB, st store.Store, snd sender.Sender, cfg *queue.Config) *queue.Queue {
	t.Helper()
	q, err := queue.New(st, snd, cfg)
	require.NoError(t, err)
	require.NoError(t, q.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = q.Stop(ctx)
	})
	return q
}

// OverlapDetector wraps senders of several processes and records any
// moment at which two of them had a request in flight to one domain.
type OverlapDetector struct {
	mu       sync.Mutex
	inFlight map[string]map[string]int // domain -> process -> requests
	overlaps []string
}

// Sender returns the sender of the named process.
func (o *OverlapDetector) Sender(process string) *sendertest.Fake {
	return &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		o.mu.Lock()
		if o.inFlight == nil {
			o.inFlight = make(map[string]map[string]int)
		}
		if o.inFlight[d.Domain] == nil {
			o.inFlight[d.Domain] = make(map[string]int)
		}
		for p, n := range o.inFlight[d.Domain] {
			if p != process && n > 0 {
				o.overlaps = append(o.overlaps, fmt.Sprintf("%s worked by %s and %s", d.Domain, p, process))
			}
		}
		o.inFlight[d.Domain][process]++
		o.mu.Unlock()
		select { // a little latency, so that an overlap would show
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
		}
		o.mu.Lock()
		o.inFlight[d.Domain][process]--
		o.mu.Unlock()
		return sender.Success(202)
	}}
}

// Overlaps describes every overlap seen.
func (o *OverlapDetector) Overlaps() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.overlaps)
}

// Owners returns how many domains each owner holds, from the store.
func Owners(t *testing.T, st store.Store) map[string]int {
	t.Helper()
	doms, err := st.Domains(t.Context(), nil)
	require.NoError(t, err)
	out := make(map[string]int)
	for _, d := range doms {
		if d.Owner != "" && d.LeaseExpiresAt.After(time.Now()) {
			out[d.Owner]++
		}
	}
	return out
}

// AllAt reports whether every domain's cursor is at least id.
func AllAt(t *testing.T, st store.Store, id int64) bool {
	t.Helper()
	doms, err := st.Domains(t.Context(), nil)
	require.NoError(t, err)
	for _, d := range doms {
		if d.Cursor < id {
			return false
		}
	}
	return len(doms) > 0
}

// Domains returns the registrations and inboxes of n domains,
// d00.example and up.
func Domains(n int) ([]store.DomainRegistration, []string) {
	regs := make([]store.DomainRegistration, n)
	inboxes := make([]string, n)
	for i := range n {
		regs[i] = store.DomainRegistration{Domain: fmt.Sprintf("d%02d.example", i)}
		inboxes[i] = fmt.Sprintf("https://d%02d.example/inbox", i)
	}
	return regs, inboxes
}

// RequireDelivered checks that every activity of ids reached one of
// inboxes through one of fakes.
func RequireDelivered(t *testing.T, ids []int64, inboxes []string, fakes ...*sendertest.Fake) {
	t.Helper()
	delivered := make(map[int64]bool)
	for _, f := range fakes {
		for _, inbox := range inboxes {
			for _, id := range f.Delivered(inbox) {
				delivered[id] = true
			}
		}
	}
	for _, id := range ids {
		require.True(t, delivered[id], "activity %d never delivered", id)
	}
}

// StatementsPerDelivery runs a queue on st that delivers 500 activities to
// 20 domains at steady state, and checks what the design promises: a
// delivery costs a small fraction of a statement (counted by statements,
// the store's own count), because the queue reads the log in batches shared
// by every caught-up domain and saves all changed domains in one checkpoint
// per interval.
func StatementsPerDelivery(t *testing.T, st store.Store, statements func() int64) {
	t.Helper()
	const (
		domains    = 20
		activities = 500
	)
	_, inboxes := Domains(domains)
	fake := &sendertest.Fake{}
	cfg := Config("p")
	// The defaults: what is counted is then driven by the deliveries, not
	// by how long a slow machine (the race detector) takes to make them.
	cfg.CheckpointInterval = queue.CheckpointIntervalDefault
	cfg.LeaseTTL = queue.LeaseTTLDefault
	q := Start(t, st, fake, cfg)
	// Register the domains first, and let the queue lease them.
	_, err := q.Enqueue(t.Context(), Note(0, inboxes...))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return fake.DeliveredCount() == domains }, 10*time.Second, 10*time.Millisecond)

	before := statements()
	var batch []queue.Activity
	for i := range activities {
		batch = append(batch, Note(1+i, inboxes...))
	}
	ids, err := q.EnqueueMany(t.Context(), batch)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return fake.DeliveredCount() == domains*(1+activities) }, 30*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return AllAt(t, st, ids[len(ids)-1]) }, 10*time.Second, 10*time.Millisecond)
	stmts := statements() - before
	perDelivery := float64(stmts) / float64(domains*activities)
	t.Logf("%d deliveries, %d statements (including the test's own polling): %.4f statements per delivery",
		domains*activities, stmts, perDelivery)
	require.Less(t, perDelivery, 0.1, "a delivery should cost a small fraction of a statement")
}

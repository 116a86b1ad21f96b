// Package crashtest is the crash test the database stores share: a child
// process (the test binary, re-executed) enqueues activities and delivers
// them to local inboxes, is killed with SIGKILL at random moments and
// started again, several times; then the parent checks that nothing was
// lost, that first arrivals per ordering key came in ID order, and that
// re-sends stayed within the checkpoint window of each crash. A store's
// package runs it with a parent test calling Run and a child test calling
// Child. It is not part of the API.
package crashtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/internal/queuetest"
	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/store"
)

// Settings of the child processes, shared with the parent's bound on
// re-sends.
const (
	checkpointDeliveries = 10
	maxInFlight          = 4
	leaseTTL             = time.Second
	orderingKeys         = 5 // ordering keys the activities cycle through
	kills                = 6
)

// Environment of a child process.
const (
	envChild   = "APQUEUE_CRASH_CHILD"
	envInboxes = "APQUEUE_CRASH_INBOXES"
	envRun     = "APQUEUE_CRASH_RUN"
	envCount   = "APQUEUE_CRASH_COUNT"
)

// IsChild reports whether this process is a child started by Run.
func IsChild() bool { return os.Getenv(envChild) == "1" }

// Run is the parent: it starts the test named childTest of this test
// binary as the child, with env (how the child opens the store) added to
// its environment, kills it six times, lets the seventh finish, and checks
// the log, read with st, against what three inboxes received.
func Run(t *testing.T, st store.Store, childTest string, env ...string) {
	t.Helper()
	var inboxes []*inboxtest.Server
	var urls []string
	for range 3 {
		// Latency keeps deliveries in flight, so that kills land mid-way.
		in := inboxtest.New(&inboxtest.Config{Latency: 10 * time.Millisecond})
		t.Cleanup(in.Close)
		inboxes = append(inboxes, in)
		urls = append(urls, in.SharedInbox())
	}

	var (
		mu       sync.Mutex
		enqueued []string // activity IRIs (body "id") a child saw enqueued
	)
	run := func(n, count int, life time.Duration) {
		cmd := exec.Command(os.Args[0], "-test.run=^"+childTest+"$", "-test.v")
		cmd.Env = append(os.Environ(), env...)
		cmd.Env = append(cmd.Env,
			envChild+"=1",
			envInboxes+"="+strings.Join(urls, ","),
			envRun+"="+strconv.Itoa(n),
			envCount+"="+strconv.Itoa(count),
		)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = cmd.Stdout
		require.NoError(t, cmd.Start())
		done := make(chan struct{})
		// Even when a check below fails, the child is gone and its output
		// read before run returns: the reader logs to t, which must not
		// happen once the test has ended. On the way out of a passing run
		// the child has already exited, and this does nothing.
		defer func() {
			_ = cmd.Process.Kill()
			<-done
			_ = cmd.Wait()
		}()
		go func() {
			defer close(done)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				line := sc.Text()
				if iri, ok := strings.CutPrefix(line, "ENQUEUED "); ok {
					mu.Lock()
					enqueued = append(enqueued, iri)
					mu.Unlock()
				} else if strings.Contains(line, "FAIL") || strings.Contains(line, "panic") {
					t.Logf("child %d: %s", n, line)
				}
			}
		}()
		if life > 0 {
			time.Sleep(life)
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		} else {
			// The last child runs until everything arrived, then stops
			// gracefully.
			require.Eventually(t, func() bool { return everyActivityEverywhere(t, st, inboxes) }, 60*time.Second,
				50*time.Millisecond, "not every activity reached every inbox")
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		}
		<-done
		_ = cmd.Wait()
	}

	for n := range kills {
		life := time.Duration(300+rand.IntN(1200)) * time.Millisecond
		run(n, 90, life)
	}
	run(kills, 0, 0)

	// Every activity a child saw enqueued is in the log (durable) and
	// delivered; the log holds only what was enqueued.
	acts, err := st.Activities(t.Context(), 0, 100000)
	require.NoError(t, err)
	inLog := make(map[int64]string, len(acts))
	idOf := make(map[string]int64, len(acts))
	for _, a := range acts {
		inLog[a.ID] = a.OrderingKey
		var body struct{ ID string }
		require.NoError(t, json.Unmarshal(a.Body, &body))
		_, twice := idOf[body.ID]
		require.False(t, twice, "activity %s is in the log twice", body.ID)
		idOf[body.ID] = a.ID
	}
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, enqueued)
	for _, iri := range enqueued {
		_, ok := idOf[iri]
		require.True(t, ok, "activity %s was enqueued but is not in the log", iri)
	}
	t.Logf("%d activities enqueued (%d confirmed to the child before a kill or exit), %d kills",
		len(acts), len(enqueued), kills)

	// Order per ordering key, and re-sends, per inbox.
	for i, in := range inboxes {
		seen := make(map[int64]bool)
		last := make(map[string]int64) // ordering key -> last first-arrival
		for _, r := range in.Received() {
			id, ok := idOf[r.ID]
			require.True(t, ok, "inbox %d received unknown activity %s", i, r.ID)
			if seen[id] {
				continue
			}
			seen[id] = true
			key := inLog[id]
			require.Greater(t, id, last[key], "inbox %d: activity %d (key %s) arrived after %d", i, id, key, last[key])
			last[key] = id
		}
		stats := in.Stats()
		// A crash re-sends what was settled but not yet saved (at most the
		// checkpoint window, plus what settled while the save was under
		// way) and what was in flight.
		bound := kills * (checkpointDeliveries + 2*maxInFlight)
		t.Logf("inbox %d: %d accepted, %d unique, %d re-sent (bound %d)", i, stats.Accepted, stats.Unique, stats.Duplicates, bound)
		require.LessOrEqual(t, stats.Duplicates, bound, "inbox %d: too many re-sends", i)
	}
}

// everyActivityEverywhere reports whether every activity in the log was
// received by every inbox.
func everyActivityEverywhere(t *testing.T, st store.Store, inboxes []*inboxtest.Server) bool {
	acts, err := st.Activities(t.Context(), 0, 100000)
	if err != nil || len(acts) == 0 {
		return false
	}
	for _, in := range inboxes {
		got := make(map[string]bool)
		for _, r := range in.Received() {
			got[r.ID] = true
		}
		for _, a := range acts {
			var body struct{ ID string }
			if json.Unmarshal(a.Body, &body) != nil || !got[body.ID] {
				return false
			}
		}
	}
	return true
}

// EnqueueTxFunc enqueues batch with q in a transaction of the caller's,
// committed before it returns.
type EnqueueTxFunc func(ctx context.Context, q *queue.Queue, batch []queue.Activity) error

// Child is the child process, on store st: it runs a queue delivering to
// the parent's inboxes and enqueues in small batches, alternating plain
// and transactional enqueues (enqueueTx), printing each activity's IRI
// once the enqueue returned (or its transaction committed), until ctx ends
// (SIGTERM); then it stops the queue gracefully.
func Child(t *testing.T, ctx context.Context, st store.Store, enqueueTx EnqueueTxFunc) {
	t.Helper()
	run, _ := strconv.Atoi(os.Getenv(envRun))
	count, _ := strconv.Atoi(os.Getenv(envCount))
	inboxes := strings.Split(os.Getenv(envInboxes), ",")

	q, err := queue.New(st, nil, &queue.Config{
		OwnerID:              fmt.Sprintf("child-%d", run),
		HTTP:                 &sender.HTTPConfig{AllowLoopback: true, AllowHTTP: true, Unsigned: true},
		MaxInFlightPerDomain: maxInFlight,
		CheckpointDeliveries: checkpointDeliveries,
		CheckpointInterval:   200 * time.Millisecond,
		LeaseTTL:             leaseTTL,
		BackoffMin:           10 * time.Millisecond,
		BackoffMax:           100 * time.Millisecond,
		PollInterval:         time.Second,
		PruneInterval:        -1, // the parent reads the whole log at the end
		SummaryInterval:      -1,
		Logger:               queuetest.QuietLogger(),
	})
	require.NoError(t, err)
	require.NoError(t, q.Start(ctx))

	for i := 0; i < count && ctx.Err() == nil; i += 3 {
		var batch []queue.Activity
		for j := range 3 {
			n := run*1000 + i + j
			a := queuetest.Note(n, inboxes...)
			a.OrderingKey = fmt.Sprintf("https://local.example/notes/key-%d", n%orderingKeys)
			batch = append(batch, a)
		}
		if i%2 == 0 {
			_, err = q.EnqueueMany(ctx, batch)
		} else {
			err = enqueueTx(ctx, q, batch)
		}
		if err != nil {
			break
		}
		for _, a := range batch {
			var body struct{ ID string }
			require.NoError(t, json.Unmarshal(a.Body, &body))
			fmt.Printf("ENQUEUED %s\n", body.ID)
		}
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, q.Stop(stopCtx))
}

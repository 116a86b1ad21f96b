package postgres_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/store/postgres"
)

// Settings of the crash test's child processes, shared with the parent's
// bound on re-sends.
const (
	crashCheckpointDeliveries = 10
	crashMaxInFlight          = 4
	crashLeaseTTL             = time.Second
	crashKeys                 = 5 // ordering keys the activities cycle through
)

// Environment of a crash test child process.
const (
	envCrashChild   = "APQUEUE_CRASH_CHILD"
	envCrashSchema  = "APQUEUE_CRASH_SCHEMA"
	envCrashInboxes = "APQUEUE_CRASH_INBOXES"
	envCrashRun     = "APQUEUE_CRASH_RUN"
	envCrashCount   = "APQUEUE_CRASH_COUNT"
)

// TestCrashRecovery runs a child process (this test binary) that enqueues
// activities and delivers them to local inboxes, kills it with SIGKILL at
// random moments, and starts it again, several times. At the end every
// activity the child saw enqueued, and every activity in the log, reached
// every inbox at least once, the first arrivals of each ordering key came in
// ID order, and re-sends stay within the checkpoint window of each crash.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("the crash test takes about 15 s")
	}
	db := pgtest.New(t, nil)
	st, _ := newStoreOn(t, db, nil)

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
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
		cmd.Env = append(os.Environ(),
			envCrashChild+"=1",
			envCrashSchema+"="+db.Schema,
			envCrashInboxes+"="+strings.Join(urls, ","),
			envCrashRun+"="+strconv.Itoa(n),
			envCrashCount+"="+strconv.Itoa(count),
		)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = cmd.Stdout
		require.NoError(t, cmd.Start())
		done := make(chan struct{})
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

	const kills = 6
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
		bound := kills * (crashCheckpointDeliveries + 2*crashMaxInFlight)
		t.Logf("inbox %d: %d accepted, %d unique, %d re-sent (bound %d)", i, stats.Accepted, stats.Unique, stats.Duplicates, bound)
		require.LessOrEqual(t, stats.Duplicates, bound, "inbox %d: too many re-sends", i)
	}
}

// everyActivityEverywhere reports whether every activity in the log was
// received by every inbox.
func everyActivityEverywhere(t *testing.T, st *postgres.Store, inboxes []*inboxtest.Server) bool {
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

// TestCrashChild is the child process of TestCrashRecovery; it does nothing
// in a normal test run.
func TestCrashChild(t *testing.T) {
	if os.Getenv(envCrashChild) != "1" {
		t.Skip("run by TestCrashRecovery only")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	run, _ := strconv.Atoi(os.Getenv(envCrashRun))
	count, _ := strconv.Atoi(os.Getenv(envCrashCount))
	inboxes := strings.Split(os.Getenv(envCrashInboxes), ",")

	pool, err := pgxpool.New(ctx, pgtest.URL(t))
	require.NoError(t, err)
	defer pool.Close()
	st, err := postgres.New(pool, &postgres.Config{Schema: os.Getenv(envCrashSchema), Logger: quietLogger()})
	require.NoError(t, err)
	defer st.Close()
	snd, err := sender.NewHTTP(&sender.HTTPConfig{AllowLoopback: true})
	require.NoError(t, err)
	q, err := queue.New(st, snd, &queue.Config{
		OwnerID:              fmt.Sprintf("child-%d", run),
		AllowHTTP:            true,
		MaxInFlightPerDomain: crashMaxInFlight,
		CheckpointDeliveries: crashCheckpointDeliveries,
		CheckpointInterval:   200 * time.Millisecond,
		LeaseTTL:             crashLeaseTTL,
		BackoffMin:           10 * time.Millisecond,
		BackoffMax:           100 * time.Millisecond,
		PollInterval:         time.Second,
		PruneInterval:        -1, // the parent reads the whole log at the end
		SummaryInterval:      -1,
		Logger:               quietLogger(),
	})
	require.NoError(t, err)
	require.NoError(t, q.Start(ctx))

	// Enqueue in small batches, alternating plain and transactional
	// enqueues, printing each activity's IRI once Enqueue returned (or its
	// transaction committed).
	for i := 0; i < count && ctx.Err() == nil; i += 3 {
		var batch []queue.Activity
		for j := range 3 {
			n := run*1000 + i + j
			a := note(n, inboxes...)
			a.OrderingKey = fmt.Sprintf("https://local.example/notes/key-%d", n%crashKeys)
			batch = append(batch, a)
		}
		if i%2 == 0 {
			_, err = q.EnqueueMany(ctx, batch)
		} else {
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				return q.EnqueueManyTx(ctx, st.Tx(tx), batch)
			})
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

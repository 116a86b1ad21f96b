package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/postgres"
)

// keyed returns an activity named by its ordering key.
func keyed(key string, domains ...string) store.NewActivity {
	a := newActivity(domains...)
	a.OrderingKey = key
	return a
}

// stage appends activities in a transaction of their own, which commits.
func stage(t *testing.T, s *postgres.Store, db interface {
	Begin(context.Context) (pgx.Tx, error)
}, acts ...store.NewActivity) {
	t.Helper()
	require.NoError(t, pgx.BeginFunc(t.Context(), db, func(tx pgx.Tx) error { return s.AppendTx(t.Context(), tx, acts) }))
}

// listen returns a function that waits for the next notification on the
// store's channel, on a connection of the test's own.
func listen(t *testing.T, ctx context.Context, db *pgtest.DB) func() string {
	t.Helper()
	conn, err := pgx.ConnectConfig(ctx, db.Pool.Config().ConnConfig)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{db.Schema + "_activities"}.Sanitize())
	require.NoError(t, err)
	return func() string {
		n, err := conn.WaitForNotification(ctx)
		require.NoError(t, err)
		return n.Payload
	}
}

// newWatched returns a migrated store with its commit watcher, its
// database, a context that ends with the test or within 10 s, and the
// notifications of its channel (see listen).
func newWatched(t *testing.T) (*postgres.Store, *pgtest.DB, context.Context, func() string) {
	t.Helper()
	s, db := newStore(t, 0, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return s, db, ctx, listen(t, ctx, db)
}

// counter reads the ID counter directly, without a store call (a store's
// reads number staged activities themselves).
func counter(t *testing.T, db *pgtest.DB) int64 {
	t.Helper()
	var n int64
	require.NoError(t, db.Pool.QueryRow(t.Context(), "SELECT last_id FROM "+pgx.Identifier{db.Schema}.Sanitize()+".id_counter").Scan(&n))
	return n
}

// TestCommitIsNumberedAndNotified commits a caller's transaction and reads
// nothing: the store's commit watcher numbers its activities and notifies
// listeners, once they have IDs. A rolled-back transaction is forgotten.
func TestCommitIsNumberedAndNotified(t *testing.T) {
	t.Parallel()
	s, db, ctx, next := newWatched(t)

	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, s.AppendTx(ctx, tx, []store.NewActivity{keyed("rolled back")}))
	require.NoError(t, tx.Rollback(ctx))
	stage(t, s, db.Pool, keyed("committed", "a.example"))
	require.Empty(t, next(), "the activities were numbered")
	require.Equal(t, int64(1), counter(t, db))
	acts, err := s.Activities(ctx, 0, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"committed"}, names(t, acts))
	doms, err := s.Domains(ctx, []string{"a.example"})
	require.NoError(t, err)
	require.Len(t, doms, 1)
	require.Zero(t, doms[0].Cursor)

	// A read that numbers nothing does not notify.
	_, err = s.Activities(ctx, 0, 10)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, "SELECT pg_notify($1, 'sentinel')", db.Schema+"_activities")
	require.NoError(t, err)
	require.Equal(t, "sentinel", next(), "a read that numbered nothing notified")
}

// TestCommitWatcherRetriesWhileTheCounterIsHeld commits a caller's
// transaction while another transaction holds the counter, as an Append in
// progress does: the watcher does not wait for it, numbers nothing, and
// keeps watching; once the counter is free it numbers the activity and
// notifies, with no read in between.
func TestCommitWatcherRetriesWhileTheCounterIsHeld(t *testing.T) {
	t.Parallel()
	s, db, ctx, next := newWatched(t)

	holder, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer holder.Rollback(context.Background()) //nolint:errcheck // ends the test's transaction on failure
	_, err = holder.Exec(ctx, "SELECT last_id FROM "+pgx.Identifier{db.Schema}.Sanitize()+".id_counter FOR UPDATE")
	require.NoError(t, err)
	stage(t, s, db.Pool, keyed("committed"))
	polled := s.Stats().Statements
	require.Eventually(t, func() bool { return s.Stats().Statements >= polled+3 }, 5*time.Second, time.Millisecond,
		"the watcher stopped polling while the counter was held")
	require.Zero(t, counter(t, db))

	require.NoError(t, holder.Rollback(ctx))
	require.Empty(t, next(), "the activity was numbered")
	require.Equal(t, int64(1), counter(t, db))
}

// TestCommitWatcherPollsDuringASteadyStream commits a caller's transaction
// while other transactions are added to the watcher without a pause: each
// puts the next poll off a little, but not for as long as they keep coming,
// so the committed activity is numbered while they do. It checks that the
// watcher goes on numbering, within a bound that no stall of the machine
// reaches; a watcher without the bound (pollDelay, tested on its own) also
// passed it, later (0.8–3.4 s against 0.2 s), as the scheduler leaves gaps
// in any stream.
func TestCommitWatcherPollsDuringASteadyStream(t *testing.T) {
	t.Parallel()
	s, db, ctx, _ := newWatched(t)

	// The stream re-adds a transaction that has ended: each poll finds it
	// ended and drops it, and the stream adds it again.
	var ended string
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&ended)
	}))
	streamCtx, stopStream := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for streamCtx.Err() == nil {
			postgres.Watch(s, ended)
			// Well within the watcher's 1 ms: a time.Sleep this short
			// can take a millisecond.
			for start := time.Now(); time.Since(start) < 100*time.Microsecond; {
				runtime.Gosched()
			}
		}
	})
	defer wg.Wait()
	defer stopStream()

	stage(t, s, db.Pool, keyed("committed"))
	require.Eventually(t, func() bool { return counter(t, db) == 1 }, 5*time.Second, time.Millisecond,
		"the activity was not numbered while transactions kept being added")
}

// TestCommitWatcherBacksOffWhileATransactionStaysOpen keeps a caller's
// transaction open for a second after its enqueue: the watcher polls it
// every millisecond at first, then ever less often, up to
// watchIntervalMax (50 ms), about 25 polls in the second. One that polled
// every millisecond throughout (as it would if the transaction kept
// counting as just added) would send hundreds.
func TestCommitWatcherBacksOffWhileATransactionStaysOpen(t *testing.T) {
	t.Parallel()
	s, db, ctx, next := newWatched(t)
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck // ends the test's transaction on failure
	require.NoError(t, s.AppendTx(ctx, tx, []store.NewActivity{keyed("open")}))
	start := s.Stats().Statements
	time.Sleep(time.Second) // the time the transaction stays open
	polls := s.Stats().Statements - start
	require.NoError(t, tx.Commit(ctx))
	require.Empty(t, next(), "the activity was numbered")
	require.Positive(t, polls, "the watcher did not poll the open transaction")
	require.Less(t, polls, int64(100), "the watcher polled an open transaction %d times in a second", polls)
}

// TestCommitWatcherNumbersMoreThanOneSweep commits more activities in one
// transaction than one sequencer statement numbers: the watcher numbers
// them all, with no read in between.
func TestCommitWatcherNumbersMoreThanOneSweep(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, nil)
	n := postgres.SweepLimit + 1
	acts := make([]store.NewActivity, n)
	for i := range acts {
		acts[i] = keyed("bulk")
	}
	stage(t, s, db.Pool, acts...)
	require.Eventually(t, func() bool { return counter(t, db) == int64(n) }, 10*time.Second, 5*time.Millisecond,
		"the watcher did not number all %d activities", n)
}

// TestReaderNumbersWhatNoWatcherSaw stages activities through a store
// whose commit watcher is stopped, as if its process had stopped before
// the commit: the next reader numbers them and notifies the others.
func TestReaderNumbersWhatNoWatcherSaw(t *testing.T) {
	t.Parallel()
	s, db, ctx, next := newWatched(t)
	s.Close()
	stage(t, s, db.Pool, keyed("staged"))
	require.Zero(t, counter(t, db), "a closed store's watcher numbered")

	reader, err := postgres.New(db.Pool, &postgres.Config{Schema: db.Schema})
	require.NoError(t, err)
	defer reader.Close()
	acts, err := reader.Activities(ctx, 0, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"staged"}, names(t, acts), "the reader returns what it numbered")
	require.Empty(t, next(), "the reader that numbered the activity notified")
}

// TestReaderDoesNotWaitForTheCounter holds the counter's lock, as an Append
// in progress does: readers return at once with what was numbered before,
// and number the staged activities once the lock is free.
func TestReaderDoesNotWaitForTheCounter(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, nil)
	s.Close() // no commit watcher: this test's reads do the numbering
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	first := appendOne(t, s)
	stage(t, s, db.Pool, keyed("staged"))

	holder, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer holder.Rollback(context.Background()) //nolint:errcheck // ends the test's transaction on failure
	_, err = holder.Exec(ctx, "SELECT last_id FROM "+pgx.Identifier{db.Schema}.Sanitize()+".id_counter FOR UPDATE")
	require.NoError(t, err)

	require.Equal(t, []int64{first}, readAll(t, s, 0))
	h, err := s.Head(ctx)
	require.NoError(t, err)
	require.Equal(t, first, h)

	require.NoError(t, holder.Rollback(ctx))
	h, err = s.Head(ctx)
	require.NoError(t, err)
	require.Equal(t, first+1, h, "Head numbers the staged activity")
	acts, err := s.Activities(ctx, first, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"staged"}, names(t, acts))
}

// TestAppendWaitingForTheCounter runs an Append while another one holds the
// counter, uncommitted, having numbered a staged activity; a second staged
// activity commits meanwhile. When the first commits, the waiting Append
// numbers the second staged activity and its own after everything the
// first numbered, and skips the staged row the first already moved: every
// activity once, IDs without gaps, in the order of their numbering.
func TestAppendWaitingForTheCounter(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, nil)
	s.Close() // no commit watcher: the test decides who numbers
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stage(t, s, db.Pool, keyed("staged-1", "a.example"))

	holder, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer holder.Rollback(context.Background()) //nolint:errcheck // ends the test's transaction on failure
	heldIDs, err := postgres.AppendIn(ctx, s, holder, []store.NewActivity{keyed("held", "b.example")})
	require.NoError(t, err)
	require.Equal(t, []int64{2}, heldIDs, "staged-1 is numbered 1, before the batch")
	stage(t, s, db.Pool, keyed("staged-2", "c.example"))

	type result struct {
		ids []int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		ids, err := appendedIDs(s.Append(ctx, []store.NewActivity{keyed("waiting", "d.example")}))
		done <- result{ids, err}
	}()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND application_name = $1`, db.Schema).Scan(&n))
		return n > 0
	}, 5*time.Second, 5*time.Millisecond, "the Append did not wait for the counter")
	require.NoError(t, holder.Commit(ctx))
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, []int64{4}, r.ids)

	acts, err := s.Activities(ctx, 0, 10)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3, 4}, ids(acts))
	require.Equal(t, []string{"staged-1", "held", "staged-2", "waiting"}, names(t, acts))
	doms, err := s.Domains(ctx, nil)
	require.NoError(t, err)
	require.Len(t, doms, 4)
	firstID := map[string]int64{"a.example": 1, "b.example": 2, "c.example": 3, "d.example": 4}
	for _, d := range doms {
		require.Less(t, d.Cursor, firstID[d.Domain], "%s starts past its activity", d.Domain)
	}
}

// TestCommitWatcherGivesUp closes the pool of the store that watches a
// caller's transaction before the transaction commits: the watcher's polls
// fail, it gives up after its limit, saying so, and another store's reader
// numbers the activity.
func TestCommitWatcherGivesUp(t *testing.T) {
	t.Parallel()
	_, db := newStore(t, 0, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	own, err := pgxpool.New(ctx, db.ConnString)
	require.NoError(t, err)
	var logs syncBuffer
	s, err := postgres.New(own, &postgres.Config{Schema: db.Schema, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	postgres.SetWatchGiveUp(s, 100*time.Millisecond)

	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, s.AppendTx(ctx, tx, []store.NewActivity{keyed("orphan")}))
	own.Close()
	require.NoError(t, tx.Commit(ctx))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "gave up checking") }, 5*time.Second,
		10*time.Millisecond, "the watcher did not give up")
	s.Close()

	reader, err := postgres.New(db.Pool, &postgres.Config{Schema: db.Schema})
	require.NoError(t, err)
	defer reader.Close()
	require.Equal(t, []string{"orphan"}, names(t, readN(t, reader, 0, 1)))
}

// syncBuffer collects log output across goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Readers and the commit watcher ask whether anything is staged on every
// read and poll. After a burst, the answer comes from the staging table's
// primary key, not from a scan of the table, which keeps the pages of every
// row moved out of it until a vacuum: a scan reads them all
// (BenchmarkHeadAfterABurst). (While the table has never held a row, the
// planner scans it: it has no page.)
func TestStagedCheckReadsTheIndexAfterABurst(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, nil)
	ctx := t.Context()
	keepStagingPages(t, s, db)
	burst := make([]store.NewActivity, 1000)
	for i := range burst {
		burst[i] = newActivity("remote.example")
		burst[i].Body = bytes.Repeat([]byte("x"), 1024)
	}
	for range 3 {
		stage(t, s, db.Pool, burst...)
	}
	require.Eventually(t, func() bool {
		head, err := s.Head(ctx)
		require.NoError(t, err)
		return head == 3000
	}, 10*time.Second, time.Millisecond, "the burst is numbered")

	var plan []byte
	require.NoError(t, db.Pool.QueryRow(ctx, "EXPLAIN (FORMAT JSON) SELECT "+postgres.StagedAnySQL(s)).Scan(&plan))
	var nodes []map[string]any
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["Relation Name"] == "staged_activities" {
				nodes = append(nodes, v)
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	var doc any
	require.NoError(t, json.Unmarshal(plan, &doc))
	walk(doc)
	require.NotEmpty(t, nodes, "the plan reads staged_activities: %s", plan)
	for _, n := range nodes {
		require.NotEqual(t, "Seq Scan", n["Node Type"], "the check scans the staging table: %s", plan)
	}
}

// keepStagingPages turns autovacuum and s's own vacuums off for db's
// staging table, so that the pages and index entries a burst left behind
// are still there when a test or benchmark reads it, as between two
// vacuums.
func keepStagingPages(tb testing.TB, s *postgres.Store, db *pgtest.DB) {
	tb.Helper()
	postgres.SetStagingVacuum(s, math.MaxInt, 0)
	_, err := db.Pool.Exec(tb.Context(), "ALTER TABLE "+pgx.Identifier{db.Schema, "staged_activities"}.Sanitize()+
		" SET (autovacuum_enabled = false)")
	require.NoError(tb, err)
}

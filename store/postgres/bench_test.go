package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/postgres"
)

func benchActivities(n int) []store.NewActivity {
	out := make([]store.NewActivity, n)
	for i := range out {
		d := fmt.Sprintf("d%d.example", i%50)
		out[i] = store.NewActivity{
			Actor:       "https://local.example/users/alice",
			OrderingKey: fmt.Sprintf("https://local.example/notes/%d", i),
			Body:        []byte(`{"type":"Create","object":{"type":"Note","content":"hello, fediverse"}}`),
			Inboxes:     []string{"https://" + d + "/inbox"},
			Domains:     []string{d},
		}
	}
	return out
}

// BenchmarkAppend measures Append in batches of several sizes, serially and
// from parallel goroutines; activities/s is the figure to compare.
//
//	TEST_DATABASE_URL=... go test -run '^$' -bench Append ./store/postgres/
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{1, 100, 1000} {
		for _, parallel := range []bool{false, true} {
			b.Run(fmt.Sprintf("batch=%d/parallel=%v", size, parallel), func(b *testing.B) {
				s, _ := newStoreWith(b, pgtest.Options{MaxConns: 8})
				batch := benchActivities(size)
				b.ResetTimer()
				if parallel {
					b.SetParallelism(2) // 2×GOMAXPROCS goroutines
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := s.Append(b.Context(), batch); err != nil {
								b.Error(err)
								return
							}
						}
					})
				} else {
					for b.Loop() {
						_, err := s.Append(b.Context(), batch)
						require.NoError(b, err)
					}
				}
				b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "activities/s")
			})
		}
	}
}

// BenchmarkAppendKeyed is BenchmarkAppend with batches of 1 and 100 in
// which every activity has an idempotency key of its own: the cost of
// keys, to compare with BenchmarkAppend.
func BenchmarkAppendKeyed(b *testing.B) {
	for _, size := range []int{1, 100} {
		for _, parallel := range []bool{false, true} {
			b.Run(fmt.Sprintf("batch=%d/parallel=%v", size, parallel), func(b *testing.B) {
				s, _ := newStoreWith(b, pgtest.Options{MaxConns: 8})
				var seq atomic.Int64
				keyed := func() []store.NewActivity {
					batch := benchActivities(size)
					for i := range batch {
						batch[i].IdempotencyKey = "bench-" + strconv.FormatInt(seq.Add(1), 10)
						batch[i].IdempotencyWindow = time.Hour
					}
					return batch
				}
				b.ResetTimer()
				if parallel {
					b.SetParallelism(2) // 2×GOMAXPROCS goroutines
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := s.Append(b.Context(), keyed()); err != nil {
								b.Error(err)
								return
							}
						}
					})
				} else {
					for b.Loop() {
						_, err := s.Append(b.Context(), keyed())
						require.NoError(b, err)
					}
				}
				b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "activities/s")
			})
		}
	}
}

// BenchmarkAppendTx measures AppendTx of one activity in a caller's
// transaction, including the commit.
func BenchmarkAppendTx(b *testing.B) {
	s, db := newStoreWith(b, pgtest.Options{MaxConns: 8})
	batch := benchActivities(1)
	b.SetParallelism(2)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			err := pgx.BeginFunc(b.Context(), db.Pool, func(tx pgx.Tx) error {
				return s.AppendTx(b.Context(), tx, batch)
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "activities/s")
}

// BenchmarkHeadAfterABurst measures a read of the log (Head) while nothing
// is staged, after a burst of 20,000 activities, 1 KiB each, was enqueued in
// callers' transactions and numbered (moved out of the staging table): the
// read of every idle queue and every poll of the commit watcher until the
// staging table is vacuumed. In "open-transaction", a caller's transaction
// that staged an activity before the burst stays open throughout, so that
// no row of the burst is dead to every transaction yet. In
// "vacuumed-by-the-store", the commit watcher vacuums the staging table as
// it does by default, but after every poll in which a transaction ended
// rather than every 1,000 rows and at most once a second, so that the
// benchmark need not wait for the last vacuum.
//
//	TEST_DATABASE_URL=... go test -run '^$' -bench HeadAfterABurst ./store/postgres/
func BenchmarkHeadAfterABurst(b *testing.B) {
	for _, name := range []string{"no-open-transaction", "open-transaction", "vacuumed-by-the-store"} {
		b.Run(name, func(b *testing.B) { benchHeadAfterABurst(b, name) })
	}
}

func benchHeadAfterABurst(b *testing.B, mode string) {
	const burst, perTx = 20_000, 500
	s, db := newStore(b, 0, nil)
	ctx := b.Context()
	keepStagingPages(b, s, db)
	if mode == "vacuumed-by-the-store" {
		postgres.SetStagingVacuum(s, 1, 0)
	}
	batch := make([]store.NewActivity, perTx)
	for i := range batch {
		batch[i] = store.NewActivity{
			Actor: "https://local.example/users/alice", OrderingKey: fmt.Sprintf("https://local.example/notes/%d", i),
			Body:    bytes.Repeat([]byte("x"), 1024),
			Inboxes: []string{"https://remote.example/inbox"}, Domains: []string{"remote.example"},
		}
	}
	if mode == "open-transaction" {
		tx, err := db.Pool.Begin(ctx)
		require.NoError(b, err)
		defer func() { require.NoError(b, tx.Rollback(context.Background())) }()
		require.NoError(b, s.AppendTx(ctx, tx, batch[:1]))
	}
	for range burst / perTx {
		require.NoError(b, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return s.AppendTx(ctx, tx, batch) }))
	}
	require.Eventually(b, func() bool {
		head, err := s.Head(ctx)
		require.NoError(b, err)
		return head == burst
	}, time.Minute, time.Millisecond, "the burst is numbered")
	if mode == "vacuumed-by-the-store" {
		require.Eventually(b, func() bool { return !postgres.WatcherRunning(s) }, time.Minute, time.Millisecond,
			"the watcher has seen the burst numbered, vacuumed and stopped")
	}
	for b.Loop() {
		if _, err := s.Head(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeliveryRemoteDatabase drains a backlog of b.N batches of 100
// activities for 20 domains (remote servers answering in 5 ms, 4 requests
// in flight per domain), with the database reachable directly and 25 ms
// away (each round trip through a delaying proxy), the situation of the
// federation delay post-mortem: throughput must barely notice, since
// deliveries never wait for the database. Compare deliveries/s.
//
//	TEST_DATABASE_URL=... go test -run '^$' -bench DeliveryRemote ./store/postgres/
func BenchmarkDeliveryRemoteDatabase(b *testing.B) {
	for _, rtt := range []time.Duration{0, 25 * time.Millisecond} {
		b.Run(fmt.Sprintf("rtt=%v", rtt), func(b *testing.B) {
			db := pgtest.New(b, nil)
			newStoreOn(b, db, nil) // migrates
			pool := db.Pool
			if rtt > 0 {
				cfg := db.Pool.Config()
				px := newProxy(b, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))), rtt/2)
				pool = poolVia(b, db, px.Addr())
			}
			st := storeOn(b, pool, db)
			const domains, batch = 20, 100
			var inboxes []string
			for i := range domains {
				inboxes = append(inboxes, fmt.Sprintf("https://d%02d.example/inbox", i))
			}
			fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
				time.Sleep(5 * time.Millisecond) // a fast remote server
				return sender.Success(202)
			}}
			cfg := queueConfig("bench")
			cfg.CheckpointInterval = time.Second
			q := startQueue(b, st, fake, cfg)
			acts := make([]queue.Activity, batch)
			for i := range acts {
				acts[i] = note(i, inboxes...)
			}
			// Enqueue b.N batches, then wait until every delivery is done:
			// the backlog drains while the database is 25 ms away.
			want := 0
			start := time.Now()
			for b.Loop() {
				_, err := q.EnqueueMany(b.Context(), acts)
				require.NoError(b, err)
				want += domains * batch
			}
			for fake.DeliveredCount() < want {
				time.Sleep(time.Millisecond)
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(want)/elapsed.Seconds(), "deliveries/s")
			b.ReportMetric(float64(st.Stats().Statements)/float64(want), "statements/delivery")
		})
	}
}

// BenchmarkCatchUp drains a backlog far larger than the queue's shared
// window (6,000 activities for each of 20 domains, enqueued before the
// queue starts), the situation after an outage, and reports statements per
// delivery: domains behind the window read the log themselves.
//
//	TEST_DATABASE_URL=... go test -run '^$' -bench CatchUp -benchtime 1x ./store/postgres/
func BenchmarkCatchUp(b *testing.B) {
	const domains, backlog = 20, 6000
	var inboxes []string
	for i := range domains {
		inboxes = append(inboxes, fmt.Sprintf("https://d%02d.example/inbox", i))
	}
	for b.Loop() {
		b.StopTimer()
		s, _ := newStore(b, 0, nil)
		fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
			time.Sleep(5 * time.Millisecond)
			return sender.Success(202)
		}}
		producer, err := queue.New(s, fake, queueConfig("producer"))
		require.NoError(b, err)
		for n := 0; n < backlog; n += 100 {
			acts := make([]queue.Activity, 100)
			for i := range acts {
				acts[i] = note(n+i, inboxes...)
			}
			_, err := producer.EnqueueMany(b.Context(), acts)
			require.NoError(b, err)
		}
		before := s.Stats().Statements
		b.StartTimer()
		start := time.Now()
		startQueue(b, s, fake, queueConfig("worker"))
		for fake.DeliveredCount() < domains*backlog {
			time.Sleep(time.Millisecond)
		}
		elapsed := time.Since(start)
		b.ReportMetric(float64(domains*backlog)/elapsed.Seconds(), "deliveries/s")
		b.ReportMetric(float64(s.Stats().Statements-before)/float64(domains*backlog), "statements/delivery")
	}
}

// BenchmarkEnqueueTxWaitForID measures how long activities enqueued in
// callers' transactions wait after their commit for the commit watcher to
// number them (and so to be delivered), while 8 callers enqueue 1 KiB
// activities without pause: the median and 90th percentile of the wait
// (p50-wait-ms, p90-wait-ms), estimated every 10 ms from the ID counter
// against the commits counted so far, so to within about 10 ms; and how
// often the watcher woke up per transaction (watcher-wakes/op).
//
//	TEST_DATABASE_URL=... go test -run '^$' -bench EnqueueTxWaitForID -benchtime 5s ./store/postgres/
func BenchmarkEnqueueTxWaitForID(b *testing.B) {
	const callers = 8
	s, db := newStoreWith(b, pgtest.Options{MaxConns: callers + 2}) // the watcher's and the sampler's too
	ctx := b.Context()
	act := store.NewActivity{
		Actor: "https://local.example/users/alice", OrderingKey: "https://local.example/notes/1",
		Body:    bytes.Repeat([]byte("x"), 1024),
		Inboxes: []string{"https://remote.example/inbox"}, Domains: []string{"remote.example"},
	}
	var handedOut, committed atomic.Int64
	stop := make(chan struct{})
	waitsC := make(chan []time.Duration, 1)
	go func() { waitsC <- sampleWaitsForID(ctx, db, &committed, stop) }()

	b.ResetTimer()
	wakes := postgres.WatcherWakes(s)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for handedOut.Add(1) <= int64(b.N) {
				if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
					return s.AppendTx(ctx, tx, []store.NewActivity{act})
				}); err != nil {
					b.Error(err)
					return
				}
				committed.Add(1)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(postgres.WatcherWakes(s)-wakes)/float64(b.N), "watcher-wakes/op")
	close(stop)
	waits := <-waitsC
	if len(waits) == 0 {
		return // too short a run to sample
	}
	slices.Sort(waits)
	b.ReportMetric(float64(waits[len(waits)/2])/float64(time.Millisecond), "p50-wait-ms")
	b.ReportMetric(float64(waits[len(waits)*9/10])/float64(time.Millisecond), "p90-wait-ms")
}

// sampleWaitsForID reads the ID counter every 10 ms until stop is closed,
// and returns, for each read, how long ago the commits it numbered had all
// been counted in committed: the wait of the last of them.
func sampleWaitsForID(ctx context.Context, db *pgtest.DB, committed *atomic.Int64, stop <-chan struct{}) []time.Duration {
	type sample struct {
		at        time.Time
		committed int64
	}
	var samples []sample
	var waits []time.Duration
	counterSQL := "SELECT last_id FROM " + pgx.Identifier{db.Schema}.Sanitize() + ".id_counter"
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return waits
		case <-tick.C:
		}
		c := committed.Load()
		var numbered int64
		if err := db.Pool.QueryRow(ctx, counterSQL).Scan(&numbered); err != nil {
			return waits
		}
		now := time.Now()
		samples = append(samples, sample{now, c})
		for i := len(samples) - 1; i >= 0; i-- {
			if samples[i].committed <= numbered {
				waits = append(waits, now.Sub(samples[i].at))
				break
			}
		}
	}
}

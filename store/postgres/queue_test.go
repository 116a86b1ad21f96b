package postgres_test

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/internal/queuetest"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/postgres"
)

// The helpers shared with the SQLite store's tests.
var (
	quietLogger      = queuetest.QuietLogger
	queueConfig      = queuetest.Config
	note             = queuetest.Note
	startQueue       = queuetest.Start
	owners           = queuetest.Owners
	allAt            = queuetest.AllAt
	testDomains      = queuetest.Domains
	requireDelivered = queuetest.RequireDelivered
)

type overlapDetector = queuetest.OverlapDetector

// poolVia returns a pool on db's database through addr (a proxy), its
// connections named after db's schema.
func poolVia(t testing.TB, db *pgtest.DB, addr *net.TCPAddr) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(db.ConnString)
	require.NoError(t, err)
	cfg.ConnConfig.Host = addr.IP.String()
	cfg.ConnConfig.Port = uint16(addr.Port)
	cfg.ConnConfig.Fallbacks = nil
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	cfg.ConnConfig.RuntimeParams["application_name"] = db.Schema
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// storeOn returns a store on pool in db's schema (already migrated).
func storeOn(t testing.TB, pool *pgxpool.Pool, db *pgtest.DB) *postgres.Store {
	t.Helper()
	s, err := postgres.New(pool, &postgres.Config{Schema: db.Schema, Logger: quietLogger()})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// TestQueuesSplitAndFence runs two queues as two processes on one schema.
// They split the domains without configuration; when one is cut off from
// the database the other takes its domains over within the lease TTL; when
// it comes back, its stale saves are refused (cursors never move back) and
// at no time do both work one domain.
func TestQueuesSplitAndFence(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t, &pgtest.Options{MaxConns: 6})
	setup, _ := newStoreOn(t, db, &postgres.Config{Logger: quietLogger()})
	const domains = 12
	regs, inboxes := testDomains(domains)
	require.NoError(t, setup.RegisterDomains(t.Context(), regs))

	var od overlapDetector
	px := newProxy(t, net.JoinHostPort(db.Pool.Config().ConnConfig.Host, strconv.Itoa(int(db.Pool.Config().ConnConfig.Port))), 0)
	stA := storeOn(t, poolVia(t, db, px.Addr()), db)
	stB := storeOn(t, db.Pool, db)
	fakeA, fakeB := od.Sender("a"), od.Sender("b")
	startQueue(t, stA, fakeA, queueConfig("a"))
	qb := startQueue(t, stB, fakeB, queueConfig("b"))

	require.Eventually(t, func() bool {
		o := owners(t, setup)
		return o["a"] == domains/2 && o["b"] == domains/2
	}, 15*time.Second, 20*time.Millisecond, "the two processes did not split the domains evenly")

	var ids []int64
	for i := range 10 * domains {
		id, err := qb.Enqueue(t.Context(), note(i, inboxes[i%domains]))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.Eventually(t, func() bool { return allAt(t, setup, ids[len(ids)-1]) }, 15*time.Second, 20*time.Millisecond)
	require.Positive(t, fakeA.DeliveredCount())
	require.Positive(t, fakeB.DeliveredCount())

	// Cut a off: b takes over a's domains once their leases expire.
	px.Cut()
	cutAt := time.Now()
	for i := range 5 * domains {
		id, err := qb.Enqueue(t.Context(), note(1000+i, inboxes[i%domains]))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.Eventually(t, func() bool { return owners(t, setup)["b"] == domains }, 30*time.Second, 20*time.Millisecond,
		"b did not take over a's domains")
	t.Logf("takeover %v after the partition (lease TTL 1s)", time.Since(cutAt).Round(10*time.Millisecond))
	require.Eventually(t, func() bool { return allAt(t, setup, ids[len(ids)-1]) }, 15*time.Second, 20*time.Millisecond)
	final := ids[len(ids)-1]

	// a comes back: its saves carry superseded tokens and are refused; it
	// rebalances by acquiring leases afresh.
	px.Restore()
	require.Eventually(t, func() bool {
		o := owners(t, setup)
		return o["a"] > 0 && o["b"] > 0
	}, 15*time.Second, 20*time.Millisecond, "a did not rejoin")
	for i := range domains {
		id, err := qb.Enqueue(t.Context(), note(2000+i, inboxes[i]))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.Eventually(t, func() bool { return allAt(t, setup, ids[len(ids)-1]) }, 15*time.Second, 20*time.Millisecond)
	doms, err := setup.Domains(t.Context(), nil)
	require.NoError(t, err)
	for _, d := range doms {
		require.GreaterOrEqual(t, d.Cursor, final, "%s moved back", d.Domain)
	}

	require.Empty(t, od.Overlaps(), "two processes worked one domain at once")
	requireDelivered(t, ids, inboxes, fakeA, fakeB)
}

// TestQueueSurvivesDatabaseRestart ends every connection of the queue's
// store (pool, listener, reservation pool) several times while activities
// are enqueued and delivered: the queue must resume by itself, deliver every
// activity in order per domain, and keep getting wake-ups through LISTEN
// (polling is off).
func TestQueueSurvivesDatabaseRestart(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, &postgres.Config{Logger: quietLogger()})
	fake := &sendertest.Fake{}
	cfg := queueConfig("p")
	cfg.MaxInFlightPerDomain = 1
	q := startQueue(t, s, fake, cfg)

	const domains = 4
	inbox := func(i int) string { return fmt.Sprintf("https://d%d.example/inbox", i%domains) }
	var ids []int64
	enqueue := func(n int) {
		// An enqueue that fails with the connection is retried, as a
		// caller would; only IDs returned count.
		for {
			id, err := q.Enqueue(t.Context(), note(n, inbox(n)))
			if err == nil {
				ids = append(ids, id)
				return
			}
			require.NoError(t, t.Context().Err())
			time.Sleep(10 * time.Millisecond)
		}
	}
	for round := range 4 {
		for i := range 25 {
			enqueue(round*100 + i)
		}
		n, err := db.TerminateConnections(t.Context())
		require.NoError(t, err)
		t.Logf("round %d: ended %d connections", round, n)
	}
	for i := range 25 {
		enqueue(900 + i)
	}
	deliveredAll := func() (map[int64]bool, bool) {
		seen := make(map[int64]bool)
		for i := range domains {
			for _, id := range fake.Delivered(inbox(i)) {
				seen[id] = true
			}
		}
		for _, id := range ids {
			if !seen[id] {
				return seen, false
			}
		}
		return seen, true
	}
	require.Eventually(t, func() bool { _, ok := deliveredAll(); return ok }, 20*time.Second, 20*time.Millisecond,
		"the queue did not resume and deliver every activity")
	for i := range domains {
		seen := make(map[int64]bool)
		var firsts []int64
		for _, id := range fake.Delivered(inbox(i)) {
			if !seen[id] {
				seen[id] = true
				firsts = append(firsts, id)
			}
		}
		require.True(t, slices.IsSorted(firsts), "%s received out of order: %v", inbox(i), firsts)
	}

	// Wake-ups still arrive through the reconnected listener.
	start := time.Now()
	enqueue(5000)
	require.Eventually(t, func() bool { return slices.Contains(fake.Delivered(inbox(5000)), ids[len(ids)-1]) },
		5*time.Second, 5*time.Millisecond)
	t.Logf("enqueue to delivery after the restarts: %v", time.Since(start).Round(time.Millisecond))
}

// TestQueueSurvivesSilentlyDeadConnections freezes every connection of the
// queue's pool, as a failover that sends no reset does: the statements on
// them never answer, while new connections work. The queue's background
// calls to the store (reads of the log, checkpoints, lease rounds) must
// give up within Config.StoreTimeout and go on over new connections,
// rather than wait until TCP gives up, many minutes later. Wake-ups come
// through a listener that is not frozen.
func TestQueueSurvivesSilentlyDeadConnections(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t, nil)
	setup, _ := newStoreOn(t, db, &postgres.Config{Logger: quietLogger()})
	px := newProxy(t, net.JoinHostPort(db.Pool.Config().ConnConfig.Host, strconv.Itoa(int(db.Pool.Config().ConnConfig.Port))), 0)
	pool := poolVia(t, db, px.Addr())
	st, err := postgres.New(pool, &postgres.Config{
		Schema: db.Schema, Logger: quietLogger(), ListenConnString: db.ConnString,
	})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	fake := &sendertest.Fake{}
	cfg := queueConfig("p")
	cfg.StoreTimeout = 300 * time.Millisecond
	q := startQueue(t, st, fake, cfg)
	// Before the queue stops: closing frozen connections would wait for
	// each one's timeout.
	t.Cleanup(px.Cut)

	const inbox = "https://a.example/inbox"
	first, err := q.Enqueue(t.Context(), note(1, inbox))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return slices.Contains(fake.Delivered(inbox), first) }, 10*time.Second, 10*time.Millisecond)

	// Every connection the pool may hand out is one that freezes.
	var conns []*pgxpool.Conn
	for range pool.Config().MaxConns {
		c, err := pool.Acquire(t.Context())
		require.NoError(t, err)
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	px.Freeze()
	// Appended by another process, on connections that work.
	start := time.Now()
	second := appendOne(t, setup, "a.example")
	// pgxpool keeps a connection whose call timed out in its slot while it
	// closes it, which takes 15 s on a frozen one: the queue resumes after
	// that (about 18 s here), not after TCP gives up.
	require.Eventually(t, func() bool { return slices.Contains(fake.Delivered(inbox), second) }, time.Minute, 10*time.Millisecond,
		"the queue did not deliver over new connections")
	t.Logf("delivered %v after the freeze", time.Since(start).Round(time.Millisecond))
}

// TestStatementsPerDelivery measures what the design promises: at steady
// state a delivery costs a small fraction of a statement, because the queue
// reads the log in batches shared by every caught-up domain and saves all
// TestStatementsPerDelivery checks that at steady state a delivery costs
// a small fraction of a statement (see internal/queuetest).
func TestStatementsPerDelivery(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, 0, &postgres.Config{Logger: quietLogger()})
	queuetest.StatementsPerDelivery(t, s, func() int64 { return s.Stats().Statements })
}

// TestNeverSeenDomainsAreDelivered: see internal/queuetest.
func TestNeverSeenDomainsAreDelivered(t *testing.T) {
	t.Parallel()
	queuetest.NeverSeenDomainsAreDelivered(t, func(t *testing.T) store.Store {
		s, _ := newStore(t, 0, nil)
		return s
	})
}

// TestNeverSeenDomainIsDeliveredFromATransaction enqueues in a caller's
// transaction to a domain the store has never seen, with no AddDomains
// call: the domain is registered when the activity is numbered.
func TestNeverSeenDomainIsDeliveredFromATransaction(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, nil)
	fake := &sendertest.Fake{}
	q := startQueue(t, s, fake, queueConfig("p"))
	ctx := t.Context()
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, q.EnqueueTx(ctx, s.Tx(tx), note(3, "https://in-tx.example/inbox")))
	require.NoError(t, tx.Commit(ctx))
	require.Eventually(t, func() bool { return len(fake.Delivered("https://in-tx.example/inbox")) == 1 },
		10*time.Second, 5*time.Millisecond, "delivered to the never-seen domain")
	doms, err := s.Domains(ctx, []string{"in-tx.example"})
	require.NoError(t, err)
	require.Len(t, doms, 1, "registered with its activity")
}

// TestEnqueueTxIdempotent enqueues one activity with one key three times:
// twice in one caller's transaction, once after it commits. It is
// delivered once, and the plain enqueue gets its ID.
func TestEnqueueTxIdempotent(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, nil)
	fake := &sendertest.Fake{}
	q := startQueue(t, s, fake, queueConfig("p"))
	ctx := t.Context()
	a := note(1, "https://a.example/inbox")
	a.IdempotencyKey = "https://local.example/activities/1"
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, q.EnqueueTx(ctx, s.Tx(tx), a))
	require.NoError(t, q.EnqueueTx(ctx, s.Tx(tx), a))
	require.NoError(t, tx.Commit(ctx))
	require.Eventually(t, func() bool { return len(fake.Delivered("https://a.example/inbox")) == 1 }, 10*time.Second, 5*time.Millisecond)
	id, err := q.Enqueue(ctx, a)
	require.NoError(t, err)
	require.Equal(t, fake.Delivered("https://a.example/inbox"), []int64{id}, "the retry got another ID")
	later := note(2, "https://a.example/inbox")
	_, err = q.Enqueue(ctx, later)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(fake.Delivered("https://a.example/inbox")) == 2 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, id, fake.Delivered("https://a.example/inbox")[0], "the keyed activity was delivered twice")
}

func TestAdminFromAnotherProcess(t *testing.T) {
	t.Parallel()
	queuetest.AdminFromAnotherProcess(t, func(t *testing.T) store.Store {
		s, _ := newStore(t, 0, nil)
		return s
	})
}

func TestActivityStatusFromAnotherProcess(t *testing.T) {
	t.Parallel()
	queuetest.ActivityStatusFromAnotherProcess(t, func(t *testing.T) store.Store {
		s, _ := newStore(t, 0, nil)
		return s
	})
}

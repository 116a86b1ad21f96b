package sqlite_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/queuetest"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/sqlite"
)

// TestQueuesShareOneFile runs two queues as two processes on one file: two
// *sql.DB, which SQLite locks against each other as it locks two processes.
// They split the domains without configuration, learn of each other's
// enqueues through Listen's counter reads (the queues' polling is off),
// and never work one domain at once; when one loses its database, the
// other takes its domains over once their leases expire (the log shows
// how long after) and delivers the rest.
func TestQueuesShareOneFile(t *testing.T) {
	t.Parallel()
	path := tempPath(t)
	setup := storeOn(t, openDB(t, dsn(path, "")), nil)
	const domains = 12
	regs, inboxes := queuetest.Domains(domains)
	require.NoError(t, setup.RegisterDomains(t.Context(), regs))

	var od queuetest.OverlapDetector
	dbA := openDB(t, dsn(path, ""))
	stA := storeOn(t, dbA, nil)
	stB := storeOn(t, openDB(t, dsn(path, "")), nil)
	fakeA, fakeB := od.Sender("a"), od.Sender("b")
	qa := queuetest.Start(t, stA, fakeA, queuetest.Config("a"))
	qb := queuetest.Start(t, stB, fakeB, queuetest.Config("b"))

	require.Eventually(t, func() bool {
		o := queuetest.Owners(t, setup)
		return o["a"] == domains/2 && o["b"] == domains/2
	}, 15*time.Second, 20*time.Millisecond, "the two processes did not split the domains evenly")

	// Each enqueues; the other's domains learn of it from the file.
	var ids []int64
	for i := range 10 * domains {
		q := qa
		if i%2 == 1 {
			q = qb
		}
		id, err := q.Enqueue(t.Context(), queuetest.Note(i, inboxes[i%domains]))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.Eventually(t, func() bool { return queuetest.AllAt(t, setup, ids[len(ids)-1]) }, 15*time.Second, 20*time.Millisecond)
	require.Positive(t, fakeA.DeliveredCount())
	require.Positive(t, fakeB.DeliveredCount())

	// a loses its database (as a process that hangs or dies would): b
	// takes its domains over once their leases expire.
	require.NoError(t, dbA.Close())
	cutAt := time.Now()
	for i := range 5 * domains {
		id, err := qb.Enqueue(t.Context(), queuetest.Note(1000+i, inboxes[i%domains]))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.Eventually(t, func() bool { return queuetest.Owners(t, setup)["b"] == domains }, 30*time.Second, 20*time.Millisecond,
		"b did not take over a's domains")
	takeover := time.Since(cutAt)
	t.Logf("takeover %v after a lost its database (lease TTL 1s)", takeover.Round(10*time.Millisecond))
	require.Eventually(t, func() bool { return queuetest.AllAt(t, setup, ids[len(ids)-1]) }, 15*time.Second, 20*time.Millisecond)

	require.Empty(t, od.Overlaps(), "two processes worked one domain at once")
	queuetest.RequireDelivered(t, ids, inboxes, fakeA, fakeB)
}

// TestEnqueueTx checks transactional enqueue through a queue: an activity
// enqueued in a transaction that commits is delivered (the commit is
// noticed by Listen's counter reads; the queue's polling is off), one in a
// transaction that rolls back is not, and neither leaves its new domain
// behind when it rolls back.
func TestEnqueueTx(t *testing.T) {
	t.Parallel()
	path := tempPath(t)
	db := openDB(t, dsn(path, ""))
	st := storeOn(t, db, nil)
	_, err := db.ExecContext(t.Context(), `CREATE TABLE notes (id INTEGER PRIMARY KEY, content TEXT)`)
	require.NoError(t, err)
	fake := &sendertest.Fake{}
	q := queuetest.Start(t, st, fake, queuetest.Config("tx"))
	ctx := t.Context()

	enqueueIn := func(n int, inbox string, commit bool) {
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, `INSERT INTO notes (id, content) VALUES (?, 'hello')`, n)
		require.NoError(t, err)
		require.NoError(t, q.EnqueueTx(ctx, st.Tx(tx), queuetest.Note(n, inbox)))
		if commit {
			require.NoError(t, tx.Commit())
		} else {
			require.NoError(t, tx.Rollback())
		}
	}

	enqueueIn(1, "https://gone.example/inbox", false)
	enqueueIn(2, "https://kept.example/inbox", true)
	require.Eventually(t, func() bool { return len(fake.Delivered("https://kept.example/inbox")) == 1 },
		30*time.Second, 5*time.Millisecond, "the committed activity was not delivered")
	// The rolled-back IDs were never visible, so the committed transaction
	// took them again: the log holds one activity, ID 1.
	require.Equal(t, []int64{1}, fake.Delivered("https://kept.example/inbox"))
	require.Empty(t, fake.Delivered("https://gone.example/inbox"))
	doms, err := st.Domains(ctx, nil)
	require.NoError(t, err)
	require.Len(t, doms, 1, "the rolled-back transaction registered its domain")
	require.Equal(t, "kept.example", doms[0].Domain)
	var notes int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM notes`).Scan(&notes))
	require.Equal(t, 1, notes)
}

// TestAppendTxHoldsWriters checks the commit rule with a caller's
// transaction: while it is open after AppendTx, readers do not see its
// activity and another append waits for it, so that it gets the next IDs
// after the transaction's, never IDs a reader could pass first.
func TestAppendTxHoldsWriters(t *testing.T) {
	t.Parallel()
	path := tempPath(t)
	db := openDB(t, dsn(path, ""))
	st := storeOn(t, db, nil)
	other := storeOn(t, openDB(t, dsn(path, "")), nil) // another process
	ctx := t.Context()
	first, err := appendedIDs(st.Append(ctx, oneActivity(`{"n":0}`)))
	require.NoError(t, err)

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	inTx, err := appendedIDs(st.AppendTx(ctx, tx, oneActivity(`{"n":1}`)))
	require.NoError(t, err)
	require.Equal(t, first[0]+1, inTx[0])

	h, err := other.Head(ctx)
	require.NoError(t, err)
	require.Equal(t, first[0], h, "a reader sees an uncommitted append")
	acts, err := other.Activities(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, acts, 1)

	later := make(chan []int64, 1)
	go func() {
		ids, err := appendedIDs(other.Append(context.WithoutCancel(ctx), oneActivity(`{"n":2}`)))
		if err != nil {
			ids = nil
		}
		later <- ids
	}()
	require.NoError(t, tx.Commit())
	got := <-later
	require.Equal(t, []int64{inTx[0] + 1}, got, "the waiting append did not follow the transaction's IDs")
	acts, err = other.Activities(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, acts, 3)
}

// TestAppendTxRefusesNilTransaction checks the argument check.
func TestAppendTxRefusesNilTransaction(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t, nil)
	_, err := st.AppendTx(t.Context(), (*sql.Tx)(nil), oneActivity(`{}`))
	require.ErrorIs(t, err, store.ErrInvalid)
}

// TestStatementsPerDelivery measures what the design promises: at steady
// TestStatementsPerDelivery checks that at steady state a delivery costs
// a small fraction of a statement (see internal/queuetest).
func TestStatementsPerDelivery(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, nil)
	queuetest.StatementsPerDelivery(t, s, func() int64 { return s.Stats().Statements })
}

// TestDeferredTransactionThatReadFirst checks what the documentation says
// of a caller's transaction begun DEFERRED (without _txlock=immediate)
// that reads before it enqueues: once another connection has written since
// its read, it cannot take the write lock, and AppendTx fails at once with
// ErrBusy, whatever the busy_timeout, appending nothing.
func TestDeferredTransactionThatReadFirst(t *testing.T) {
	t.Parallel()
	path := tempPath(t)
	deferred := openDB(t, "file:"+path+"?_pragma=busy_timeout(60000)&_pragma=synchronous(full)")
	st := storeOn(t, deferred, nil)
	other := storeOn(t, openDB(t, dsn(path, "")), nil)
	ctx := t.Context()

	tx, err := deferred.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck // ends the failed transaction
	var n int
	require.NoError(t, tx.QueryRowContext(ctx, `SELECT count(*) FROM apqueue_activities`).Scan(&n))
	_, err = other.Append(ctx, oneActivity(`{"n":1}`))
	require.NoError(t, err)

	started := time.Now()
	_, err = st.AppendTx(ctx, tx, oneActivity(`{"n":2}`))
	require.ErrorIs(t, err, sqlite.ErrBusy)
	require.Less(t, time.Since(started), 30*time.Second, "waited out the busy_timeout (60 s) for a lock it can never get")
	require.NoError(t, tx.Rollback())
	h, err := other.Head(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), h)
}

// TestAdminFromAnotherProcess runs every admin operation from a second
// queue while the owner delivers (see internal/queuetest).
func TestAdminFromAnotherProcess(t *testing.T) {
	t.Parallel()
	queuetest.AdminFromAnotherProcess(t, func(t *testing.T) store.Store {
		s, _ := newStore(t, nil)
		return s
	})
}

// TestNeverSeenDomainsAreDelivered: see internal/queuetest.
func TestNeverSeenDomainsAreDelivered(t *testing.T) {
	t.Parallel()
	queuetest.NeverSeenDomainsAreDelivered(t, func(t *testing.T) store.Store {
		s, _ := newStore(t, nil)
		return s
	})
}

// TestClearBackoffClearsProgressRetries checks that RetryNow and MarkAlive
// (ChangeDomain with ClearBackoff) also clear the retry times saved in the
// domain's Progress, so that an owner that loads the domain afresh retries
// at once rather than after the backoff it had saved.
func TestClearBackoffClearsProgressRetries(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t, nil)
	ctx := t.Context()
	ids, err := appendedIDs(st.Append(ctx, oneActivity(`{"n":1}`)))
	require.NoError(t, err)
	held, err := st.AcquireLeases(ctx, "owner", time.Minute, 1)
	require.NoError(t, err)
	require.Len(t, held, 1)
	later := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	state := held[0]
	state.Progress = &store.Progress{Deliveries: []store.DeliveryProgress{
		{ActivityID: ids[0], Inbox: "https://a.example/inbox", Attempts: 3, NextAttemptAt: later},
	}}
	require.NoError(t, st.Checkpoint(ctx, []store.DomainState{state}, nil))

	got, err := st.ChangeDomain(ctx, "a.example", store.DomainChange{Status: store.StatusPaused})
	require.NoError(t, err)
	require.True(t, later.Equal(got.Progress.Deliveries[0].NextAttemptAt), "a change without ClearBackoff cleared the retry")

	got, err = st.ChangeDomain(ctx, "a.example", store.DomainChange{ClearBackoff: true})
	require.NoError(t, err)
	require.Equal(t, []store.DeliveryProgress{{ActivityID: ids[0], Inbox: "https://a.example/inbox", Attempts: 3}},
		got.Progress.Deliveries, "the retry time is kept, or the attempts are lost")
	doms, err := st.Domains(ctx, []string{"a.example"})
	require.NoError(t, err)
	require.Equal(t, got.Progress, doms[0].Progress, "the cleared progress is not what is saved")
}

// TestActivityStatusFromAnotherProcess checks an activity's status read
// from the store by a queue that works none of its domains (see
// internal/queuetest).
func TestActivityStatusFromAnotherProcess(t *testing.T) {
	t.Parallel()
	queuetest.ActivityStatusFromAnotherProcess(t, func(t *testing.T) store.Store {
		s, _ := newStore(t, nil)
		return s
	})
}

// Package postgres is the production store of apqueue: a store.Store with
// transactional enqueue (Store.Tx) on PostgreSQL (13 or later) through
// pgx/v5, shared by any number of processes.
//
// # Setup
//
// The caller owns the *pgxpool.Pool. New does not touch the database;
// Migrate creates the schema (Config.Schema, "apqueue" by default) and its
// tables from versioned SQL files embedded in the package, and is safe to
// call on every start from every process. Version reports the applied
// version and LatestVersion the one this library migrates to.
//
//	pool, _ := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
//	st, _ := postgres.New(pool, nil)
//	defer st.Close()
//	if _, err := st.Migrate(ctx); err != nil { ... }
//	q, _ := queue.New(st, nil, &queue.Config{Keys: keys})
//
// # Transactional enqueue
//
// Store.Tx binds the caller's pgx.Tx for queue.EnqueueTx (AppendTx is the
// same at the store level): the activity is delivered if and only if the
// transaction commits. It costs the transaction exactly one statement, a
// plain INSERT that takes no lock another enqueue waits for, and the store
// opens no connection of its own for it.
//
//	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//		if _, err := tx.Exec(ctx, "INSERT INTO notes ...", ...); err != nil {
//			return err
//		}
//		return q.EnqueueTx(ctx, st.Tx(tx), queue.Activity{...})
//	})
//
// # Ordering and the commit rule: a commit-order sequencer
//
// IDs are strictly increasing in the order in which readers can see them,
// so that a reader that has read up to an ID never finds a lower one later,
// even from a transaction that commits late. A transaction's activities
// therefore cannot get their IDs inside it: the caller's INSERT puts them,
// without an ID, in a staging table (staged_activities), and once the
// transaction has committed a sequencer numbers them: one statement that
// locks the one-row ID counter, moves the committed staged rows its
// snapshot sees into the activity log numbered from the counter, advances
// it, registers the new domains they name and sends NOTIFY. Rows of a
// transaction still open or rolled back are invisible to it; so an open
// transaction holds back nothing, not even the delivery of later
// activities, and a rolled-back one leaves no gap. Append numbers its own
// batch the same way, after the staged rows, in one autocommit statement;
// concurrent Append calls of one Store share a statement (group commit).
//
// Who sequences: every Append; every reader (Activities, Head) that finds
// staged rows and the counter free (it never waits for it); and the
// store's commit watcher, which polls the transactions that called
// AppendTx on the pool, in one statement that numbers what has committed
// as a reader does and reads their status (pg_xact_status), until each
// has rolled back or has its activities numbered; the NOTIFY of a
// statement that numbered anything wakes every listening process. The
// caller's transaction sends no NOTIFY itself: PostgreSQL holds a
// database-wide lock from a notifying transaction's pre-commit until after
// its commit is flushed, which made enqueueing transactions commit one at
// a time.
//
// Why this design and not PgQ's: PgQ's ticker (Skytools) writes events with
// a plain INSERT too and cuts the log into batches between two transaction
// snapshots (pg_current_snapshot, xid8), so readers follow ticks, not
// event IDs, and within a batch events are not in commit order. apqueue's
// readers, cursors, checkpoints and retention all work in activity IDs
// (the cursor is the highest settled ID), and the store contract promises
// that IDs grow in the order readers see them; PgQ's batches would change
// all of that, or need a renumbering step, which is a sequencer. The
// sequencer's cost is a second write of each transactional activity (a
// move) and a short wait between commit and ID, which the watcher keeps to
// a few milliseconds for a lone commit, and within about 50 ms plus two of
// its statements while callers enqueue without pause (it polls once for a
// burst of commits).
//
// Upgrade: schema version 6 adds the staging table; processes of version 3
// go on appending through the counter and its reservations
// (pending_appends), which readers still honour (OpenTransactions reports
// them), so both versions can run on one schema during a rolling upgrade.
// Staged activities are numbered only by processes of this release.
// Versions 7 and 8 (idempotency keys, forgettable domains) add a table, two
// columns of the staging table and a column default, none of which version
// 3 uses; a process of version 3 does not know the suspended status, so
// finish the upgrade before suspending a domain. Version 9 (owners' change
// marks, for KeepLeases) adds a table, a sequence and two triggers on the
// domains table; processes of version 8 go on renewing with their whole
// list, and their statements move the marks too. The triggers need
// PostgreSQL 13 or later (pg_current_xact_id).
//
// # Idempotency keys
//
// A key is claimed (idempotency_keys: key, activity ID, expiry) only by a
// statement that holds the counter: an Append claims its batch's keys in
// its own statement, and the sequencer claims a staged activity's key when
// it numbers it, dropping the activity (its ID stays unused) when an
// earlier one holds the key. Of any number of appends with one key, in any
// processes, the first in ID order is kept. A caller's transaction claims
// nothing: it does not stage an activity whose key is taken or staged
// where it can see it, so a duplicate inside a transaction is not written,
// and two open transactions with one key cost no lock; the later one's
// activity is dropped when it is numbered. Prune deletes expired keys in
// statements of at most 5,000 rows, under the lock timeout.
//
// # Leases
//
// A domain's lease is three columns of its row (owner, fencing token,
// expiry) set with the database's clock; AcquireLeases uses FOR UPDATE SKIP
// LOCKED, and every Checkpoint is fenced on owner and token. There are no
// session-level locks, so leases survive connection loss and work through
// pgBouncer. ForgetDomain deletes a domain's row; a row of the domain
// registered again starts its tokens at the time in microseconds, above
// every token the old row reached, so that an owner that has not yet
// noticed the loss cannot pass the new row's fence.
//
// # Wake-ups and pgBouncer
//
// Listen holds one dedicated connection (from Config.ListenConnString, or
// the pool's configuration) in LISTEN, and reconnects with backoff when it is
// lost. Everything else works in the QueryExecModeExec and
// QueryExecModeSimpleProtocol modes that pgBouncer's transaction pooling
// needs; there, either point ListenConnString at the server directly or set
// Config.PollOnly and let the queue poll.
//
// # Cost
//
// Every method is one statement, whatever the batch size, AppendTx
// included (the commit watcher adds about one statement per batch of
// commits, outside the callers' transactions); Stats counts them. The queue
// reads the log once per batch for all caught-up domains and checkpoints all
// changed domains in one statement per interval, so a delivery costs a small
// fraction of a round trip.
//
// # Retention and maintenance
//
// Prune deletes in statements of at most 5,000 rows; PruneDeadLetters
// (store.DeadLetterPruner, called by the queue's retention job) deletes dead
// letters by age and beyond a cap per domain the same way. Every lock a
// maintenance step or a migration takes waits at most Config.LockTimeout:
// one blocked by another session changes nothing and fails with
// ErrLockTimeout, so it never leaves enqueues queued behind it. TableSizes
// reports the size of every table.
//
// The staging table holds every transactional activity for moments and
// keeps its dead rows until a vacuum, while every read of the log steps
// over them; autovacuum comes by at most once a minute by default. So the
// commit watcher vacuums it itself (VACUUM (SKIP_LOCKED, TRUNCATE false))
// each time the transactions it watched have left 1,000 more dead rows, at
// most once a second, and for no more than about 5 % of its time. Only a
// role that may vacuum the table (its owner, as the role that ran Migrate
// is, the database's owner, a superuser, or a role with MAINTAIN from
// PostgreSQL 17) does; another says so once in the log and leaves it to
// autovacuum. The other tables are left to autovacuum.
package postgres

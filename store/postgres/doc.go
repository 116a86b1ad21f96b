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
// transaction commits, and the commit wakes the queues listening on the
// database.
//
//	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//		if _, err := tx.Exec(ctx, "INSERT INTO notes ...", ...); err != nil {
//			return err
//		}
//		_, err := q.EnqueueTx(ctx, st.Tx(tx), queue.Activity{...})
//		return err
//	})
//
// # Ordering and the commit rule
//
// IDs come from a one-row counter. Append takes IDs, inserts the batch,
// registers new domains and sends NOTIFY in one autocommit statement, so the
// counter's row lock serialises appends only for the time the server runs
// and commits that statement. AppendTx reserves its IDs on a connection of
// the store's own (a reservation records the caller's transaction ID), then
// inserts in the caller's transaction. Readers (Activities, Head) stop just
// below the first reserved ID of any transaction still in progress, so a
// reader that advances past what it read never skips an activity that
// commits later. A long caller transaction therefore holds back delivery
// of later activities, never other enqueues: call EnqueueTx late in a
// transaction that commits soon. OpenTransactions reports the open ones,
// for monitoring.
//
// # Leases
//
// A domain's lease is three columns of its row (owner, fencing token,
// expiry) set with the database's clock; AcquireLeases uses FOR UPDATE SKIP
// LOCKED, and every Checkpoint is fenced on owner and token. There are no
// session-level locks, so leases survive connection loss and work through
// pgBouncer.
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
// Every method is one statement (AppendTx three), whatever the batch size;
// Stats counts them. The queue reads the log once per batch for all
// caught-up domains and checkpoints all changed domains in one statement per
// interval, so a delivery costs a small fraction of a round trip.
package postgres

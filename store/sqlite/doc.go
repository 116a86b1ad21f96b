// Package sqlite is the embedded store of apqueue: a store.Store with
// transactional enqueue (Store.Tx) on an SQLite database file, through
// database/sql, durable with no database server. It works with any SQLite
// driver (modernc.org/sqlite, github.com/ncruces/go-sqlite3,
// github.com/mattn/go-sqlite3) and imports none: the embedder opens the
// *sql.DB with the driver it already uses. Several processes on one
// machine may share the file. It needs SQLite 3.35 or later.
//
// # Setup
//
// SQLite's settings are per connection, so they go in the DSN, which the
// driver applies to every connection it opens. The store needs two, and
// Migrate refuses (ErrUnsafeSettings) a connection without them:
//
//   - busy_timeout above 0, so that a writer waits its turn for the write
//     lock instead of failing at once (5000 ms is a good value);
//   - synchronous FULL, SQLite's default, so that a commit is on disk
//     before it is acknowledged (see Durability).
//
// and recommends a third for callers' transactions, _txlock=immediate (see
// Transactional enqueue). In the DSN syntax of the common drivers:
//
//	modernc.org/sqlite  file:app.db?_pragma=busy_timeout(5000)&_pragma=synchronous(full)&_txlock=immediate
//	ncruces/go-sqlite3  file:app.db?_pragma=busy_timeout(5000)&_pragma=synchronous(full)&_txlock=immediate
//	mattn/go-sqlite3    file:app.db?_busy_timeout=5000&_synchronous=FULL&_txlock=immediate
//
// New does not touch the database; Migrate checks the settings, creates the
// tables (all named apqueue_*, so they can share the application's own
// file) from versioned SQL files embedded in the package, and switches the
// file to WAL mode. It is safe to call on every start from every process.
//
//	db, _ := sql.Open("sqlite", "file:app.db?_pragma=busy_timeout(5000)&_pragma=synchronous(full)&_txlock=immediate")
//	st, _ := sqlite.New(db, nil)
//	if _, err := st.Migrate(ctx); err != nil { ... }
//	q, _ := queue.New(st, nil, &queue.Config{Keys: keys})
//
// # Durability
//
// The file is in WAL mode (set by Migrate; it is a property of the file
// and lasts): readers and the writer do not block each other, and a commit
// appends to the WAL. With synchronous FULL the WAL is synced at every
// commit, so an enqueue that returned (or a caller's transaction that
// committed) survives a power loss, not only a crash of the process. In WAL
// mode NORMAL syncs only at checkpoints, and a power loss can take back
// the last commits; an application that wants NORMAL for its own writes
// can open a second *sql.DB on the same file with FULL for the queue.
//
// # Ordering and the commit rule
//
// SQLite lets one transaction at a time write to the file, across all
// connections and processes. IDs come from a one-row counter that every
// append updates first, in the transaction that inserts its activities, so
// the transaction that takes IDs holds the write lock until it commits or
// rolls back, and no other can take IDs meanwhile: IDs become visible in ID
// order, and a reader that advances past what it read never skips an
// activity that commits later. IDs of a transaction that rolls back were
// never visible and are handed out again.
//
// Write transactions of the store begin with BEGIN IMMEDIATE, run by the
// store on a connection of its own, so they take the write lock first and
// wait for it in SQLite's busy handler; writers of one Store take turns in
// the process before they ask for it.
//
// # Transactional enqueue
//
// Store.Tx binds the caller's *sql.Tx for queue.EnqueueTx (AppendTx is the
// same at the store level): the activity is appended, and its new domains
// registered, if and only if the transaction commits.
//
//	tx, _ := db.BeginTx(ctx, nil)
//	tx.ExecContext(ctx, "INSERT INTO notes ...", ...)
//	err := q.EnqueueTx(ctx, st.Tx(tx), queue.Activity{...})
//	... tx.Commit()
//
// The append's first statement writes, so from then on the caller's
// transaction holds the write lock: every other writer, the queue's
// checkpoints and lease renewals included, waits for its commit. Call
// EnqueueTx late in a transaction that commits soon (well within
// busy_timeout and the queue's LeaseTTL). Begin transactions IMMEDIATE
// (_txlock=immediate): a deferred transaction that has read before it
// writes cannot take the write lock once another connection has written
// since, and fails with ErrBusy whatever the busy_timeout.
//
// # Several processes
//
// Leases are columns of the domain rows with fencing tokens, as on
// PostgreSQL: one owner per domain, a domain whose owner died is taken
// over once its lease expires (Config.LeaseTTL of the queue), and a save
// by a previous owner is refused. Lease times come from the clock of the
// machine the processes share. Keep the file on a local disk: SQLite's
// locking does not work reliably on network file systems.
//
// The store implements store.LeaseKeeper: once renewed, a lease follows its
// owner's row in apqueue_owners, and an idle renewal writes that one row
// and reads the owner's change mark (moved by triggers when a lease is
// taken, a domain forgotten or changed by an admin) instead of rewriting
// every domain row the process holds. Schema version 4 adds the marks;
// processes of version 3 sharing the file go on renewing with their whole
// list, and take a lease that follows its owner for one held for ever: they
// never take a domain over from a process of this release, which still
// takes theirs. Finish an upgrade before relying on takeovers.
//
// # Wake-ups
//
// SQLite has no LISTEN/NOTIFY. Append wakes the Listen calls of its own
// Store at once, and AppendTx within milliseconds of the caller's commit
// (Listen reads the ID counter every 2 ms while such a transaction is
// open); every Config.ListenInterval (100 ms by default) Listen also reads
// the counter to notice other processes' appends. A negative
// ListenInterval leaves those to the queue's PollInterval.
//
// # Errors
//
// SQLite's result codes are mapped in one place to ErrBusy (locked beyond
// busy_timeout), ErrReadOnly, ErrFull (disk full, or max_page_count),
// ErrCorrupt (not a database, or damaged), ErrNotMigrated,
// ErrSchemaTooNew and store.ErrInvalid (constraint violations). A failed
// call wrote nothing: every write is one transaction.
//
// # Cost
//
// Every write method is one transaction of a few statements, whatever the
// batch size; Stats counts them. The queue reads the log once per batch
// for all caught-up domains and checkpoints all changed domains in one
// transaction per interval, so a delivery costs a small fraction of a
// statement.
package sqlite

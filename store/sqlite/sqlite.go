package sqlite

import (
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/store"
)

// ListenIntervalDefault is how often Listen reads the ID counter to notice
// activities appended by other processes, or committed by callers'
// transactions, when Config.ListenInterval is zero.
const ListenIntervalDefault = 100 * time.Millisecond

// Config configures a Store. A nil *Config means every default.
type Config struct {
	// ListenInterval is how often Listen reads the ID counter (one small
	// read) to notice appends of other processes on the same file. Appends
	// through this Store wake its Listen calls at once: Append when it
	// commits, AppendTx (Tx) within milliseconds of the caller's commit. A
	// negative value turns the reads off: Listen then returns
	// store.ErrNotifyUnsupported and the queue relies on its PollInterval.
	// Default: ListenIntervalDefault.
	ListenInterval time.Duration

	// Logger receives the store's rare log lines. Default: slog.Default().
	Logger *slog.Logger
}

// QueryStats counts the work a Store asked of SQLite.
type QueryStats struct {
	// Statements is the number of SQL statements the store ran, transaction
	// control (BEGIN IMMEDIATE, COMMIT, ROLLBACK) and Listen's reads of the
	// ID counter included.
	Statements int64
}

// Store is a store.Store on an SQLite database file, with transactional
// enqueue (Tx). It is safe for concurrent use, and any number of Stores, in
// any number of processes on one machine, may share one file. Create it
// with New, create its tables with Migrate, and Close it when done.
type Store struct {
	db             *sql.DB
	listenInterval time.Duration
	logger         *slog.Logger

	statements atomic.Int64

	// writeGate lets one write transaction of this Store at a time ask
	// SQLite for the write lock (see write).
	writeGate chan struct{}

	// stmtMu guards stmts, the prepared read statements by query text
	// (prepared.go), and closed.
	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt
	closed bool

	// mu guards listeners, the Listen calls to notify after each Append.
	mu        sync.Mutex
	listeners map[*listener]struct{}

	// txPendingID is the highest ID AppendTx handed out, and txPendingAt
	// when (Unix nanoseconds): Listen watches for its commit (listen.go).
	txPendingID, txPendingAt atomic.Int64
}

var _ store.Store = (*Store)(nil)

// New returns a Store that keeps its data in db, an SQLite database opened
// with the embedder's driver (see the package documentation for the
// connection settings it needs). It does not touch the database: call
// Migrate before the first use, which also checks those settings. The
// caller keeps ownership of db and closes it when done.
func New(db *sql.DB, cfg *Config) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("sqlite: new store: nil db: %w", store.ErrInvalid)
	}
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.ListenInterval == 0 {
		c.ListenInterval = ListenIntervalDefault
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return &Store{
		db:             db,
		listenInterval: c.ListenInterval,
		logger:         c.Logger,
		writeGate:      make(chan struct{}, 1),
		stmts:          make(map[string]*sql.Stmt),
		listeners:      make(map[*listener]struct{}),
	}, nil
}

// Stats returns the number of statements the store has run so far. At
// steady state the queue reads the log once per batch for every caught-up
// domain and saves every changed domain in one checkpoint transaction per
// interval, so a delivery costs a small fraction of a statement.
func (s *Store) Stats() QueryStats {
	return QueryStats{Statements: s.statements.Load()}
}

// count records n statements run.
func (s *Store) count(n int) { s.statements.Add(int64(n)) }

// now returns the current time as the store keeps it: microseconds since
// the Unix epoch. Every process sharing a file runs on the same machine, so
// they share this clock.
func now() int64 { return time.Now().UnixMicro() }

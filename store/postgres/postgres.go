package postgres

import (
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/apqueue/apqueue/store"
)

// SchemaDefault is the schema that holds apqueue's tables when
// Config.Schema is empty.
const SchemaDefault = "apqueue"

// LockTimeoutDefault is Config.LockTimeout when it is zero.
const LockTimeoutDefault = time.Second

// Config configures a Store. A nil *Config means every default.
type Config struct {
	// Schema is the PostgreSQL schema holding the store's tables: a plain
	// identifier of at most 48 lower-case letters, digits and underscores,
	// starting with a letter or underscore (the NOTIFY channel is named
	// after it, within PostgreSQL's 63-byte limit). Several stores (for example one per
	// tenant, or one per test) can share a database under different
	// schemas. Default: SchemaDefault.
	Schema string

	// PollOnly turns LISTEN/NOTIFY wake-ups off: Listen returns
	// store.ErrNotifyUnsupported and the queue polls. Set it behind a
	// pgBouncer in transaction pooling mode without ListenConnString, where
	// LISTEN cannot work. Appends still send NOTIFY, which is harmless.
	// Default: false.
	PollOnly bool

	// ListenConnString is the connection string of the dedicated connection
	// Listen holds open. Set it when the pool goes through a pooler in
	// transaction mode (pgBouncer) but the database can also be reached
	// directly. Default: the pool's own connection configuration.
	ListenConnString string

	// LockTimeout is how long a maintenance step (Prune, PruneDeadLetters)
	// or a migration waits for a lock (PostgreSQL's lock_timeout). While it
	// waits, statements that need a conflicting lock (enqueues and
	// checkpoints, for Prune's lock on the domains table) queue behind it,
	// so it is short: a maintenance step that times out is skipped and
	// logged, and runs again at its next interval; a migration that times
	// out fails, changing nothing, and Migrate can be called again.
	// Default: LockTimeoutDefault.
	LockTimeout time.Duration

	// Logger receives the store's rare log lines (the listener losing and
	// regaining its connection). Default: slog.Default().
	Logger *slog.Logger
}

// QueryStats counts the work a Store asked of the database.
type QueryStats struct {
	// Statements is the number of SQL statements the store sent, each one a
	// round trip (transaction control included; LISTEN waits excluded).
	Statements int64
}

// Store is a store.Store on PostgreSQL with transactional enqueue (Tx). It is safe for
// concurrent use, and any number of Stores, in any number of processes, may
// share one schema. Create it with New, create its tables with Migrate, and
// Close it when done.
//
// Besides the caller's pool, a Store opens one connection of its own, for
// Listen.
type Store struct {
	pool       *pgxpool.Pool
	schema     string
	channel    string
	pollOnly   bool
	listenConf *pgx.ConnConfig
	logger     *slog.Logger
	sql        queries
	// lockTimeout is Config.LockTimeout as a lock_timeout setting.
	lockTimeout string

	// pingInterval and pingTimeout are the listener's health check.
	pingInterval, pingTimeout time.Duration
	// watchGiveUp is how long the commit watcher retries failing polls.
	watchGiveUp time.Duration
	// How many ended rows and how long between the commit watcher's
	// vacuums of the staging table (see stagingVacuumRows).
	stagingVacuumRows     int
	stagingVacuumInterval time.Duration

	statements atomic.Int64

	// appends combines concurrent Append calls into one statement.
	appends groupCommit
	// watcher numbers what callers' transactions staged once they commit.
	watcher commitWatcher
}

var (
	_ store.Store            = (*Store)(nil)
	_ store.DeadLetterPruner = (*Store)(nil)
)

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// New returns a Store that keeps its data in the given pool's database, in
// the schema named by cfg. It does not touch the database: call Migrate
// before the first use. The caller keeps ownership of pool and closes it
// after closing the Store.
func New(pool *pgxpool.Pool, cfg *Config) (*Store, error) {
	if pool == nil {
		return nil, fmt.Errorf("postgres: new store: nil pool: %w", store.ErrInvalid)
	}
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Schema == "" {
		c.Schema = SchemaDefault
	}
	if !identRE.MatchString(c.Schema) {
		return nil, fmt.Errorf("postgres: new store: schema %q is not a plain lower-case identifier: %w", c.Schema, store.ErrInvalid)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.LockTimeout == 0 {
		c.LockTimeout = LockTimeoutDefault
	}
	if c.LockTimeout < time.Millisecond {
		return nil, fmt.Errorf("postgres: new store: LockTimeout %v is below 1ms: %w", c.LockTimeout, store.ErrInvalid)
	}
	listenConf := pool.Config().ConnConfig.Copy()
	if c.ListenConnString != "" {
		lc, err := pgx.ParseConfig(c.ListenConnString)
		if err != nil {
			return nil, fmt.Errorf("postgres: new store: parse ListenConnString: %v: %w", err, store.ErrInvalid)
		}
		listenConf = lc
	}
	s := &Store{
		pool:       pool,
		schema:     c.Schema,
		channel:    c.Schema + "_activities",
		pollOnly:   c.PollOnly,
		listenConf: listenConf,
		logger:     c.Logger,

		lockTimeout: strconv.FormatInt(c.LockTimeout.Milliseconds(), 10) + "ms",

		pingInterval: listenPingInterval,
		pingTimeout:  listenPingTimeout,
		watchGiveUp:  watchGiveUp,

		stagingVacuumRows:     stagingVacuumRows,
		stagingVacuumInterval: stagingVacuumInterval,
	}
	s.sql = newQueries(pgx.Identifier{c.Schema}.Sanitize())
	return s, nil
}

// Schema returns the name of the schema that holds the store's tables.
func (s *Store) Schema() string { return s.schema }

// Stats returns the number of statements the store has sent so far. At
// steady state the queue reads the log once per batch for every caught-up
// domain and saves every changed domain in one checkpoint statement per
// interval, so a delivery costs a small fraction of a statement.
func (s *Store) Stats() QueryStats {
	return QueryStats{Statements: s.statements.Load()}
}

// Close stops the store's commit watcher (see AppendTx) and waits for it;
// activities of transactions that commit afterwards are numbered by the
// next reader or Append instead. Call it before closing the pool. (Without
// Close, the watcher's goroutine still ends once every transaction it
// watches has ended.) It does
// not close the caller's pool, and it does not end a running Listen, which
// ends with its context.
func (s *Store) Close() { s.closeWatcher() }

// count records n statements sent.
func (s *Store) count(n int) { s.statements.Add(int64(n)) }

// queries holds the store's SQL with the schema name filled in.
type queries struct {
	append, stageTx, stageOneTx, activities, head                                           string
	register, domains, checkpoint, acquire, renew, release                                  string
	leaseStats, deadLetters, deleteDeadLetters, pruneFloor, pruneDelete, pruneLock, version string
	changeDomain, openTransactions, expireDeadLetters, capDeadLetters                       string
	stageKeyedTx, knownKeys, pruneKeys, forgetDomain                                        string
	deadLettersByActivity, keepListed, keepFull, watch, vacuumStaging, mayVacuum            string
}

func newQueries(schema string) queries {
	r := strings.NewReplacer("{s}", schema, "{safe_head}", safeHeadSQL)
	q := queries{
		append:            appendSQL,
		stageTx:           stageTxSQL,
		stageOneTx:        stageOneTxSQL,
		activities:        activitiesSQL,
		head:              headSQL,
		watch:             watchSQL,
		register:          registerSQL,
		domains:           domainsSQL,
		checkpoint:        checkpointSQL,
		acquire:           acquireSQL,
		renew:             renewSQL,
		release:           releaseSQL,
		leaseStats:        leaseStatsSQL,
		deadLetters:       deadLettersSQL,
		deleteDeadLetters: deleteDeadLettersSQL,
		pruneFloor:        pruneFloorSQL,
		pruneDelete:       pruneDeleteSQL,
		pruneLock:         "LOCK TABLE {s}.domains IN SHARE ROW EXCLUSIVE MODE",
		version:           versionSQL,
		changeDomain:      changeDomainSQL,
		openTransactions:  openTransactionsSQL,
		expireDeadLetters: expireDeadLettersSQL,
		capDeadLetters:    capDeadLettersSQL,
		stageKeyedTx:      stageKeyedTxSQL,
		knownKeys:         knownKeysSQL,
		pruneKeys:         pruneKeysSQL,
		forgetDomain:      forgetDomainSQL,

		deadLettersByActivity: deadLettersByActivitySQL,
		keepListed:            keepSQL(false),
		keepFull:              keepSQL(true),
		vacuumStaging:         stagingVacuumSQL,
		mayVacuum:             mayVacuumSQL,
	}
	for _, p := range []*string{
		&q.append, &q.stageTx, &q.stageOneTx, &q.activities, &q.head, &q.register, &q.domains,
		&q.checkpoint, &q.acquire, &q.renew, &q.release, &q.leaseStats, &q.deadLetters,
		&q.deleteDeadLetters, &q.pruneFloor, &q.pruneDelete, &q.pruneLock, &q.version, &q.changeDomain, &q.openTransactions,
		&q.expireDeadLetters, &q.capDeadLetters,
		&q.stageKeyedTx, &q.knownKeys, &q.pruneKeys, &q.forgetDomain,
		&q.deadLettersByActivity, &q.keepListed, &q.keepFull, &q.watch, &q.vacuumStaging, &q.mayVacuum,
	} {
		// Twice: {safe_head} itself names {s}.
		*p = r.Replace(r.Replace(*p))
	}
	return q
}

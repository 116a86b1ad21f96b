package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/memory"
	"github.com/apqueue/apqueue/store/postgres"
	"github.com/apqueue/apqueue/store/sqlite"
)

// backend is the storage of one run: one in-memory store shared by every
// queue, an SQLite file (sqlitebackend.go) with a *sql.DB and a store per
// queue, or a PostgreSQL schema of the run's own (created and migrated at
// the start, dropped at the end), reached through the latency proxy when one
// is asked for, with a pool and a store per queue, as separate processes
// would have.
type backend struct {
	kind   string
	mem    *memory.Store
	url    string
	schema string
	proxy  *latencyProxy
	// remoteProxy is the parent's proxy address, in a child process.
	remoteProxy string
	// ownsSchema: close drops the schema (the parent's backend).
	ownsSchema bool
	conns      int
	pollOnly   bool
	logger     *slog.Logger

	pools  []*pgxpool.Pool
	stores []*postgres.Store

	// sqlitePath is the SQLite file; sqliteDir, when set, the temporary
	// directory holding it, removed by close.
	sqlitePath, sqliteDir string
	sqliteDBs             []*sql.DB
	sqliteStores          []*sqlite.Store
}

func openBackend(ctx context.Context, o *options, logger *slog.Logger) (*backend, error) {
	b := &backend{kind: o.store, url: o.databaseURL, conns: o.dbConns, pollOnly: o.pollOnly, logger: logger}
	switch o.store {
	case "memory":
		b.mem = memory.New()
		return b, nil
	case "sqlite":
		if err := b.openSQLite(ctx, o.dbPath); err != nil {
			b.close()
			return nil, err
		}
		return b, nil
	}
	b.schema, b.ownsSchema = "loadtest_"+randomHex(6), true
	if o.dbLatency > 0 {
		cfg, err := pgx.ParseConfig(o.databaseURL)
		if err != nil {
			return nil, fmt.Errorf("parse database URL: %w", err)
		}
		p, err := startLatencyProxy(net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), o.dbLatency)
		if err != nil {
			return nil, fmt.Errorf("latency proxy: %w", err)
		}
		b.proxy = p
	}
	// Migrate directly, not through the proxy: set-up is not measured.
	pool, err := newPool(ctx, o.databaseURL, "", 2)
	if err != nil {
		b.close()
		return nil, err
	}
	defer pool.Close()
	st, err := postgres.New(pool, &postgres.Config{Schema: b.schema, Logger: logger})
	if err != nil {
		b.close()
		return nil, err
	}
	if _, err := st.Migrate(ctx); err != nil {
		b.close()
		return nil, fmt.Errorf("migrate schema %s: %w", b.schema, err)
	}
	return b, nil
}

// proxyAddr is the latency proxy's address, "" without one.
func (b *backend) proxyAddr() string {
	if b.proxy == nil {
		return b.remoteProxy
	}
	return b.proxy.addr()
}

// newStore returns the store for one more queue of this process.
func (b *backend) newStore(ctx context.Context) (store.Store, error) {
	if b.mem != nil {
		return b.mem, nil
	}
	if b.kind == "sqlite" {
		return b.newSQLiteStore()
	}
	pool, err := newPool(ctx, b.url, b.proxyAddr(), int32(b.conns))
	if err != nil {
		return nil, err
	}
	st, err := postgres.New(pool, &postgres.Config{Schema: b.schema, PollOnly: b.pollOnly, Logger: b.logger})
	if err != nil {
		pool.Close()
		return nil, err
	}
	b.pools = append(b.pools, pool)
	b.stores = append(b.stores, st)
	return st, nil
}

// statements is the number of SQL statements this process's stores sent.
func (b *backend) statements() int64 {
	var n int64
	for _, s := range b.stores {
		n += s.Stats().Statements
	}
	for _, s := range b.sqliteStores {
		n += s.Stats().Statements
	}
	return n
}

// close closes the stores and pools, drops the schema and stops the proxy.
func (b *backend) close() {
	b.closeSQLite()
	for _, s := range b.stores {
		s.Close()
	}
	for _, p := range b.pools {
		p.Close()
	}
	if b.proxy != nil {
		_ = b.proxy.close()
	}
	if b.ownsSchema {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, b.url); err == nil {
			_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{b.schema}.Sanitize()+" CASCADE")
			if err != nil {
				b.logger.Error("loadtest: dropping schema failed", slog.String("schema", b.schema), slog.Any("error", err))
			}
			_ = conn.Close(ctx)
		}
	}
}

// newPool connects a pool of at most conns connections to url, or to
// proxyAddr instead of url's host when set.
func newPool(ctx context.Context, url, proxyAddr string, conns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	if proxyAddr != "" {
		host, port, err := net.SplitHostPort(proxyAddr)
		if err != nil {
			return nil, err
		}
		p, _ := strconv.Atoi(port)
		cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Fallbacks = host, uint16(p), nil
	}
	cfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return pool, nil
}

// enqueuePostgresTx enqueues acts with q in one transaction on the pool of
// the last store newStore returned.
func (b *backend) enqueuePostgresTx(ctx context.Context, q *queue.Queue, acts []queue.Activity) error {
	pool, st := b.pools[len(b.pools)-1], b.stores[len(b.stores)-1]
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return q.EnqueueManyTx(ctx, st.Tx(tx), acts)
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

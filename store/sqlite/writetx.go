package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strings"
)

// querier is what both a connection of the store's own and a caller's
// transaction offer, so that an append runs the same statements in either.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// write runs fn in a write transaction on a connection of its own, begun
// with BEGIN IMMEDIATE whatever the driver's default: the transaction takes
// the database's write lock before its first statement, so it waits for
// other writers in SQLite's busy handler (busy_timeout) and can never fail
// half-way because another writer committed after it read (SQLITE_BUSY
// with a deferred transaction, which no timeout cures). The store runs the
// BEGIN itself on a pinned connection (database/sql's BeginTx cannot ask
// for IMMEDIATE), so the embedder's DSN does not matter here.
//
// Writers of this Store take turns at a gate of their own before they ask
// SQLite for the lock: SQLite lets one writer in at a time anyway, and its
// busy handler makes waiters poll with growing sleeps, which is unfair
// under load (a waiter can sleep through many turns and time out). The
// gate queues them in the process instead, so busy_timeout is spent only
// on writers of other processes, other Stores and callers' transactions.
//
// fn must use only q: with a pool of one connection, a query on the pool
// would wait for the connection q holds.
//
// COMMIT runs even if ctx ends while fn is done, so that a nil error means
// the transaction committed and an error means it did not.
func (s *Store) write(ctx context.Context, fn func(q querier) error) error {
	select {
	case s.writeGate <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.writeGate }()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	s.count(1)
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		s.release(conn, false)
		return err
	}
	if err := fn(conn); err != nil {
		s.rollback(ctx, conn)
		return err
	}
	s.count(1)
	if _, err := conn.ExecContext(context.WithoutCancel(ctx), "COMMIT"); err != nil {
		s.rollback(ctx, conn)
		return err
	}
	s.release(conn, false)
	return nil
}

// rollback ends the open transaction of conn and returns conn to the pool.
// SQLite rolls some failed transactions back by itself (SQLITE_FULL, for
// example); the ROLLBACK then fails with "no transaction is active", which
// is fine. Any other failure leaves the connection in doubt, so it is
// closed rather than handed to the next user in the middle of a transaction.
func (s *Store) rollback(ctx context.Context, conn *sql.Conn) {
	s.count(1)
	_, err := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
	bad := err != nil && !strings.Contains(strings.ToLower(err.Error()), "no transaction is active")
	s.release(conn, bad)
}

// release returns conn to the pool, or closes it when bad.
func (s *Store) release(conn *sql.Conn, bad bool) {
	if bad {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = conn.Close()
}

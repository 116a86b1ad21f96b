package sqlite

import (
	"context"
	"database/sql"
	"errors"
)

// prepared returns the statement query prepared on the pool, preparing it
// on first use. The store reads through prepared statements because SQLite
// spends more time parsing its small queries than running them, and the
// queue runs the same few reads many times a second (the window's reads of
// the log, Listen's reads of the counter); database/sql keeps each
// statement prepared on every connection that ran it. Only constant query
// texts are prepared, so the cache stays small; Close releases it.
func (s *Store) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if s.closed {
		return nil, errors.New("store is closed")
	}
	if st, ok := s.stmts[query]; ok {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	s.stmts[query] = st
	return st, nil
}

// Close releases the statements the store prepared on the pool. It does
// not close the caller's *sql.DB, which closes them too; the store must not
// be used afterwards.
func (s *Store) Close() {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	s.closed = true
	for _, st := range s.stmts {
		_ = st.Close()
	}
	s.stmts = nil
}

// query runs the read query through its prepared statement.
func (s *Store) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := s.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

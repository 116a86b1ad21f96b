package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// TableSize is the size of one of the store's tables, for watching that
// retention keeps them small.
type TableSize struct {
	// Table is the table's name, in the store's schema.
	Table string
	// Rows is PostgreSQL's estimate of the live rows (pg_class.reltuples,
	// kept up to date by autovacuum and ANALYZE); -1 before the table was
	// first vacuumed or analysed.
	Rows int64
	// Bytes is the space the table takes on disk with its indexes and
	// TOAST data (pg_total_relation_size).
	Bytes int64
}

const tableSizesSQL = `SELECT c.relname::text, greatest(c.reltuples, -1)::bigint, pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
ORDER BY c.relname`

// TableSizes returns the size of every table of the store's schema, sorted
// by name, in one statement that reads only the catalogue.
func (s *Store) TableSizes(ctx context.Context) ([]TableSize, error) {
	const op = "read table sizes"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	s.count(1)
	rows, err := s.pool.Query(ctx, tableSizesSQL, s.schema)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (TableSize, error) {
		var t TableSize
		err := row.Scan(&t.Table, &t.Rows, &t.Bytes)
		return t, err
	})
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

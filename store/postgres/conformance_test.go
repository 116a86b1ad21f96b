package postgres_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/storetest"
)

// TestConformance runs the store conformance suite in every query mode.
func TestConformance(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			storetest.Run(t, func(t *testing.T) store.Store {
				s, _ := newStore(t, m.mode, nil)
				return s
			})
		})
	}
}

// TestConformanceTx runs the conformance cases of transactional appends in
// every query mode.
func TestConformanceTx(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			storetest.RunTx(t, func(t *testing.T) (store.Store, storetest.TxFunc) {
				s, db := newStore(t, m.mode, nil)
				return s, func(t *testing.T) (store.Tx, func() error, func() error) {
					tx, err := db.Pool.Begin(t.Context())
					require.NoError(t, err)
					return s.Tx(tx), func() error { return tx.Commit(context.Background()) },
						func() error { return tx.Rollback(context.Background()) }
				}
			})
		})
	}
}

package postgres_test

import (
	"testing"

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

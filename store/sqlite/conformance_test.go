package sqlite_test

import (
	"time"

	"testing"

	"github.com/apqueue/apqueue/internal/queuetest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/sqlite"
	"github.com/apqueue/apqueue/store/storetest"
)

// TestConformance runs the store conformance suite, with Listen's counter
// reads on and off.
func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name     string
		interval time.Duration
	}{{"listen", 0}, {"poll_only", -1}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			storetest.Run(t, func(t *testing.T) store.Store {
				s, _ := newStore(t, &sqlite.Config{ListenInterval: c.interval, Logger: queuetest.QuietLogger()})
				return s
			})
		})
	}
}

package queue

import (
	"testing"

	"github.com/apqueue/apqueue/internal/leakcheck"
)

// TestMain fails the run if goroutines started by the tests outlive them:
// every test stops its queues.
func TestMain(m *testing.M) { leakcheck.Main(m) }

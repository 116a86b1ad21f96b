package queue_test

import (
	"testing"

	"github.com/apqueue/apqueue/internal/queuetest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/memory"
)

func TestAdminFromAnotherProcess(t *testing.T) {
	t.Parallel()
	queuetest.AdminFromAnotherProcess(t, func(*testing.T) store.Store { return memory.New() })
}

func TestActivityStatusFromAnotherProcess(t *testing.T) {
	t.Parallel()
	queuetest.ActivityStatusFromAnotherProcess(t, func(*testing.T) store.Store { return memory.New() })
}

func TestNeverSeenDomainsAreDelivered(t *testing.T) {
	t.Parallel()
	queuetest.NeverSeenDomainsAreDelivered(t, func(*testing.T) store.Store { return memory.New() })
}

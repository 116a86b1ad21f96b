package memory_test

import (
	"testing"

	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/memory"
	"github.com/apqueue/apqueue/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return memory.New() })
}

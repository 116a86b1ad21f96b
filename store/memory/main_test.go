package memory_test

import (
	"testing"

	"github.com/apqueue/apqueue/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

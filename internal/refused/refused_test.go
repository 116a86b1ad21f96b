package refused_test

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/leakcheck"
	"github.com/apqueue/apqueue/internal/refused"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// Once the test has ended, the port is free again.
func TestAddrReleasesThePort(t *testing.T) {
	t.Parallel()
	var addr string
	t.Run("holds", func(t *testing.T) { addr = refused.Addr(t, "127.0.0.1") })
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	require.NoError(t, ln.Close())
}

func TestAddrRejectsWhatIsNotIPv4(t *testing.T) {
	t.Parallel()
	for _, ip := range []string{"::1", "localhost", ""} {
		r := &recorder{}
		func() {
			defer func() { _ = recover() }()
			refused.Addr(r, ip)
		}()
		require.True(t, r.failed, "%q accepted", ip)
	}
}

// recorder is a testing.TB whose Fatalf records the failure and stops the
// call (as FailNow does) with a panic the test recovers.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(string, ...any) {
	r.failed = true
	panic("fatal")
}

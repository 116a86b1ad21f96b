package refused_test

import (
	"errors"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/leakcheck"
	"github.com/apqueue/apqueue/internal/refused"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func TestAddrRefusesConnections(t *testing.T) {
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		addr := refused.Addr(t, ip)
		_, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.Error(t, err)
		require.True(t, errors.Is(err, syscall.ECONNREFUSED), "%s: %v", addr, err)
	}
}

// While the test runs, no listener gets the port: not one that names it,
// and so not one that asks for any free port either.
func TestAddrKeepsThePort(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("the port is held only on unix")
	}
	addr := refused.Addr(t, "127.0.0.1")
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
	}
	require.True(t, errors.Is(err, syscall.EADDRINUSE), "listen on %s: %v", addr, err)
}

// Once the test has ended, the port is free again.
func TestAddrReleasesThePort(t *testing.T) {
	var addr string
	t.Run("holds", func(t *testing.T) { addr = refused.Addr(t, "127.0.0.1") })
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	require.NoError(t, ln.Close())
}

func TestAddrRejectsWhatIsNotIPv4(t *testing.T) {
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

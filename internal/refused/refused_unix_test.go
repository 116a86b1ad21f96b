//go:build unix

package refused_test

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/refused"
)

func TestAddrRefusesConnections(t *testing.T) {
	t.Parallel()
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		addr := refused.Addr(t, ip)
		_, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.Error(t, err)
		require.True(t, errors.Is(err, syscall.ECONNREFUSED), "%s: %v", addr, err)
	}
}

// While the test runs, a listener that names the port cannot take it.
func TestAddrKeepsThePort(t *testing.T) {
	t.Parallel()
	addr := refused.Addr(t, "127.0.0.1")
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
	}
	require.True(t, errors.Is(err, syscall.EADDRINUSE), "listen on %s: %v", addr, err)
}

// Package refused gives tests an address that refuses TCP connections for
// as long as the test runs.
//
// Taking a free port and closing it again is not enough when tests run in
// parallel: another test's listener may get the port before the dial. On
// unix, Addr keeps the port bound, without listening, until the test ends:
// a connection to it is refused, and no listener can take it. Elsewhere it
// takes a free port and closes it again.
package refused

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
)

// Addr returns "ip:port" for a port of ip (an IPv4 loopback address, such
// as 127.0.0.1) that refuses connections until t and its subtests end.
func Addr(t testing.TB, ip string) string {
	t.Helper()
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is4() {
		t.Fatalf("refused: %q is not an IPv4 address", ip)
	}
	port, release, err := hold(a)
	if err != nil {
		t.Fatalf("refused: hold a port of %s: %v", ip, err)
	}
	t.Cleanup(func() {
		if err := release(); err != nil {
			t.Errorf("refused: release port %d of %s: %v", port, ip, err)
		}
	})
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

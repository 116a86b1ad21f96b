//go:build !unix

package refused

import (
	"fmt"
	"net"
	"net/netip"
)

// hold takes a free port of ip and closes it again: where the unix way is
// not available, another listener may take the port before the test dials
// it, which is unlikely.
func hold(ip netip.Addr) (port int, release func() error, err error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		return 0, nil, fmt.Errorf("listen: %w", err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, nil, fmt.Errorf("close: %w", err)
	}
	return port, func() error { return nil }, nil
}

//go:build unix

package refused

import (
	"fmt"
	"net/netip"
	"syscall"
)

// hold binds a TCP socket to a free port of ip and does not listen on it:
// the kernel refuses connections to the port, and no other socket can bind
// it (this one does not set SO_REUSEADDR, so even a listener that does
// cannot share it).
func hold(ip netip.Addr) (port int, release func() error, err error) {
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return 0, nil, fmt.Errorf("socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: ip.As4()}); err != nil {
		syscall.Close(fd)
		return 0, nil, fmt.Errorf("bind: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return 0, nil, fmt.Errorf("getsockname: %w", err)
	}
	in4, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		syscall.Close(fd)
		return 0, nil, fmt.Errorf("getsockname: %T, not an IPv4 address", sa)
	}
	return in4.Port, func() error { return syscall.Close(fd) }, nil
}

package sender

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// BlockedAddressError reports a connection the SSRF guard refused because the
// address is not a public unicast address and no allow list names it. It is
// never retryable: the HTTP sender classifies it Permanent.
type BlockedAddressError struct {
	// Addr is the refused address.
	Addr netip.Addr
	// Range names the blocked range, such as "loopback" or "private".
	Range string
}

// Error says which address was refused and how to allow it.
func (e *BlockedAddressError) Error() string {
	return fmt.Sprintf("refusing to connect to %s (%s address); allow it with HTTPConfig.AllowPrefixes", e.Addr, e.Range)
}

type blockedRange struct {
	prefix netip.Prefix
	name   string
}

// blockedRanges are refused unless allowed. Addresses embedding an IPv4
// address (IPv4-mapped, NAT64, 6to4) are checked by their IPv4 address.
var blockedRanges = func() []blockedRange {
	ranges := []struct{ prefix, name string }{
		// IPv4 (RFC 6890 and friends).
		{"0.0.0.0/8", "this-network"},
		{"10.0.0.0/8", "private"},
		{"100.64.0.0/10", "carrier-grade NAT"},
		{"127.0.0.0/8", "loopback"},
		{"169.254.0.0/16", "link-local"},
		{"172.16.0.0/12", "private"},
		{"192.0.0.0/24", "IETF protocol assignment"},
		{"192.0.2.0/24", "documentation"},
		{"192.88.99.0/24", "6to4 relay anycast"},
		{"192.168.0.0/16", "private"},
		{"198.18.0.0/15", "benchmarking"},
		{"198.51.100.0/24", "documentation"},
		{"203.0.113.0/24", "documentation"},
		{"224.0.0.0/4", "multicast"},
		{"240.0.0.0/4", "reserved"}, // includes 255.255.255.255 broadcast
		// IPv6 (RFC 6890, IANA special-purpose registry).
		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"::/96", "IPv4-compatible"},
		{"::ffff:0:0:0/96", "IPv4-translated"},
		{"64:ff9b:1::/48", "local-use NAT64"},
		{"100::/64", "discard-only"},
		{"2001::/32", "Teredo"},
		{"2001:2::/48", "benchmarking"},
		{"2001:10::/28", "ORCHID"},
		{"2001:20::/28", "ORCHIDv2"},
		{"2001:db8::/32", "documentation"},
		{"3fff::/20", "documentation"},
		{"5f00::/16", "segment routing"},
		{"fc00::/7", "unique local"},
		{"fe80::/10", "link-local"},
		{"fec0::/10", "site-local"},
		{"ff00::/8", "multicast"},
	}
	out := make([]blockedRange, len(ranges))
	for i, r := range ranges {
		out[i] = blockedRange{netip.MustParsePrefix(r.prefix), r.name}
	}
	return out
}()

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// LoopbackPrefixes are the loopback ranges, for HTTPConfig.AllowPrefixes in
// tests and the quick start, whose inboxes listen on loopback.
var LoopbackPrefixes = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

// CheckAddr reports whether the HTTP sender may connect to addr: it returns
// nil for a public unicast address or one inside an allowed prefix, and a
// *BlockedAddressError otherwise. It is the check the dialer runs on every
// address it connects to; applications can use it to vet addresses early.
func CheckAddr(addr netip.Addr, allow []netip.Prefix) error {
	addr = addr.WithZone("")
	for _, p := range allow {
		if p.Contains(addr) || p.Contains(addr.Unmap()) {
			return nil
		}
	}
	if name, blocked := blockedRangeOf(addr); blocked {
		return &BlockedAddressError{Addr: addr, Range: name}
	}
	return nil
}

func blockedRangeOf(addr netip.Addr) (string, bool) {
	if !addr.IsValid() {
		return "invalid", true
	}
	if addr.Is4In6() {
		name, blocked := blockedRangeOf(addr.Unmap())
		if blocked {
			return "IPv4-mapped " + name, true
		}
		return "", false
	}
	if addr.Is6() {
		b := addr.As16()
		var embedded netip.Addr
		switch {
		case nat64.Contains(addr):
			embedded = netip.AddrFrom4([4]byte(b[12:16]))
		case sixToFour.Contains(addr):
			embedded = netip.AddrFrom4([4]byte(b[2:6]))
		}
		if embedded.IsValid() {
			if name, blocked := blockedRangeOf(embedded); blocked {
				return "IPv4-embedding " + name, true
			}
		}
	}
	for _, r := range blockedRanges {
		if r.prefix.Contains(addr) {
			return r.name, true
		}
	}
	if !addr.IsGlobalUnicast() {
		return "non-unicast", true
	}
	return "", false
}

// dialControl returns a net.Dialer.ControlContext function that checks every
// address the dialer is about to connect to, after DNS resolution, so a name
// that resolves (or re-resolves) to a blocked address is refused.
func dialControl(allow []netip.Prefix) func(ctx context.Context, network, address string, c syscall.RawConn) error {
	return func(_ context.Context, network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("sender: unexpected dial address %q: %w", address, err)
		}
		return CheckAddr(ap.Addr(), allow)
	}
}

// dialerFor builds the guarded dialer of an HTTP sender.
func dialerFor(cfg *HTTPConfig) *guardedDialer {
	resolver := cfg.Resolver
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	return &guardedDialer{
		dialer: &net.Dialer{
			Timeout:        cfg.DialTimeout,
			Resolver:       resolver,
			ControlContext: dialControl(cfg.AllowPrefixes),
		},
		resolver: resolver,
		allow:    cfg.AllowPrefixes,
	}
}

// guardedDialer resolves a host itself and dials only the addresses the
// guard allows, so that a host with both a blocked and an allowed address
// that is down fails as the network failure it is (to be retried), not as a
// refusal. The dialer's control function checks every connection again.
type guardedDialer struct {
	dialer   *net.Dialer
	resolver *net.Resolver
	allow    []netip.Prefix
}

// DialContext connects to the first allowed address of address's host that
// answers. When every address is blocked, the error is the first
// *BlockedAddressError.
func (g *guardedDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return g.dialer.DialContext(ctx, network, address) // a literal: the control function decides
	}
	ips, err := g.resolver.LookupNetIP(ctx, lookupNetwork(network), host)
	if err != nil {
		return nil, err
	}
	var blocked, dialErr error
	for _, ip := range ips {
		ip = ip.Unmap() // the resolver may return IPv4 in IPv6 form
		if err := CheckAddr(ip, g.allow); err != nil {
			if blocked == nil {
				blocked = err
			}
			continue
		}
		conn, err := g.dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return conn, nil
		}
		if dialErr == nil {
			dialErr = err
		}
	}
	if dialErr != nil {
		return nil, dialErr
	}
	if blocked != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: blocked}
	}
	return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
}

func lookupNetwork(network string) string {
	switch network {
	case "tcp4":
		return "ip4"
	case "tcp6":
		return "ip6"
	}
	return "ip"
}

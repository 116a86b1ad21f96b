package sender

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckAddrBlocksSpecialRanges(t *testing.T) {
	t.Parallel()
	blocked := map[string]string{
		"0.0.0.0":                "this-network",
		"0.1.2.3":                "this-network",
		"10.1.2.3":               "private",
		"100.64.0.1":             "carrier-grade NAT",
		"100.127.255.254":        "carrier-grade NAT",
		"127.0.0.1":              "loopback",
		"127.255.255.254":        "loopback",
		"169.254.169.254":        "link-local", // cloud metadata
		"172.16.0.1":             "private",
		"172.31.255.255":         "private",
		"192.0.0.8":              "IETF protocol assignment",
		"192.0.2.1":              "documentation",
		"192.88.99.1":            "6to4 relay anycast",
		"192.168.1.1":            "private",
		"198.18.0.1":             "benchmarking",
		"198.19.255.255":         "benchmarking",
		"198.51.100.7":           "documentation",
		"203.0.113.9":            "documentation",
		"224.0.0.1":              "multicast",
		"239.255.255.250":        "multicast",
		"240.0.0.1":              "reserved",
		"255.255.255.255":        "reserved",
		"::":                     "unspecified",
		"::1":                    "loopback",
		"::127.0.0.1":            "IPv4-compatible",
		"::ffff:127.0.0.1":       "IPv4-mapped loopback",
		"::ffff:10.0.0.1":        "IPv4-mapped private",
		"::ffff:169.254.169.254": "IPv4-mapped link-local",
		"64:ff9b::7f00:1":        "IPv4-embedding loopback",
		"64:ff9b::a00:1":         "IPv4-embedding private",
		"64:ff9b:1::1":           "local-use NAT64",
		"2002:7f00:1::1":         "IPv4-embedding loopback",
		"2002:c0a8:101::1":       "IPv4-embedding private",
		"100::1":                 "discard-only",
		"2001::1":                "Teredo",
		"2001:2::1":              "benchmarking",
		"2001:db8::1":            "documentation",
		"3fff::1":                "documentation",
		"fc00::1":                "unique local",
		"fd12:3456::1":           "unique local",
		"fe80::1":                "link-local",
		"fe80::1%eth0":           "link-local",
		"fec0::1":                "site-local",
		"ff02::1":                "multicast",
	}
	for s, rng := range blocked {
		addr := netip.MustParseAddr(s)
		err := CheckAddr(addr, nil)
		var be *BlockedAddressError
		require.True(t, errors.As(err, &be), "%s must be blocked", s)
		require.Equal(t, rng, be.Range, s)
		require.Contains(t, be.Error(), rng)
	}
	for _, s := range []string{"1.1.1.1", "8.8.8.8", "93.184.215.14", "100.63.255.255", "100.128.0.0", "172.32.0.1", "198.17.255.255",
		"2606:4700::1111", "2a01:4f8::1", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"} {
		require.NoError(t, CheckAddr(netip.MustParseAddr(s), nil), s)
	}
	require.Error(t, CheckAddr(netip.Addr{}, nil))
}

func TestCheckAddrAllowList(t *testing.T) {
	t.Parallel()
	allow := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00::/64")}
	require.NoError(t, CheckAddr(netip.MustParseAddr("10.0.0.7"), allow))
	require.NoError(t, CheckAddr(netip.MustParseAddr("::ffff:10.0.0.7"), allow))
	require.NoError(t, CheckAddr(netip.MustParseAddr("fd00::5"), allow))
	require.Error(t, CheckAddr(netip.MustParseAddr("10.0.1.7"), allow))
	require.Error(t, CheckAddr(netip.MustParseAddr("fd00:0:0:1::5"), allow))
	require.Error(t, CheckAddr(netip.MustParseAddr("127.0.0.1"), allow))
	require.NoError(t, CheckAddr(netip.MustParseAddr("127.0.0.1"), LoopbackPrefixes))
	require.NoError(t, CheckAddr(netip.MustParseAddr("::1"), LoopbackPrefixes))
}

func TestDialRefusesHostnameResolvingToLoopback(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	require.NoError(t, err)

	h, err := NewHTTP(&HTTPConfig{AllowHTTP: true}) // the guard, not the scheme, refuses
	require.NoError(t, err)
	t.Cleanup(h.Close)

	// The guard sits in the dialer, after name resolution.
	_, err = h.transport.DialContext(context.Background(), "tcp", net.JoinHostPort("localhost", port))
	var be *BlockedAddressError
	require.True(t, errors.As(err, &be), "dialing localhost: %v", err)
	require.Equal(t, "loopback", be.Range)

	for _, inbox := range []string{
		"http://localhost:" + port + "/inbox",
		"http://127.0.0.1:" + port + "/inbox",
		"http://[::ffff:127.0.0.1]:" + port + "/inbox",
	} {
		res := h.Send(context.Background(), testDelivery(inbox))
		require.Equal(t, Permanent, res.Outcome, inbox)
		require.Zero(t, res.Status)
		require.True(t, strings.HasPrefix(res.Reason, "blocked: refusing to connect to "), res.Reason)
		require.Contains(t, res.Reason, "loopback")
	}
	require.Zero(t, hits.Load())
}

func TestAllowListLetsLoopbackThrough(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	require.NoError(t, err)

	for name, cfg := range map[string]*HTTPConfig{
		"AllowLoopback": {AllowLoopback: true, AllowHTTP: true},
		"AllowPrefixes": {AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, AllowHTTP: true},
	} {
		h, err := NewHTTP(cfg)
		require.NoError(t, err)
		res := h.Send(context.Background(), testDelivery("http://localhost:"+port+"/inbox"))
		h.Close()
		require.Equal(t, Delivered, res.Outcome, "%s: %s", name, res.Reason)
		require.Equal(t, http.StatusAccepted, res.Status)
	}
}

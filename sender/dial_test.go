package sender

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/fakedns"
	"github.com/apqueue/apqueue/internal/refused"
)

// fakeResolver answers every A query with addrs, from a DNS server on
// loopback.
func fakeResolver(t *testing.T, addrs ...[4]byte) *net.Resolver {
	t.Helper()
	srv, err := fakedns.Start(addrs...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	return srv.Resolver()
}

// A host with a blocked address and an allowed one that is down fails as a
// network failure, to be retried, not as a permanent refusal.
func TestMixedAddressesFailAsTheAllowedOneDoes(t *testing.T) {
	t.Parallel()
	_, port, err := net.SplitHostPort(refused.Addr(t, "127.0.0.2"))
	require.NoError(t, err)
	h, err := NewHTTP(&HTTPConfig{
		Resolver:      fakeResolver(t, [4]byte{127, 0, 0, 1}, [4]byte{127, 0, 0, 2}),
		AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, // a trusted relay, say
		AllowHTTP:     true,
	})
	require.NoError(t, err)
	defer h.Close()
	res := h.Send(context.Background(), testDelivery("http://mixed.example:"+port+"/inbox"))
	require.Equal(t, Retry, res.Outcome, res.Reason)
	require.True(t, res.DomainLevel)
	require.False(t, strings.Contains(res.Reason, "blocked"), res.Reason)
}

// The allowed address of a host with a blocked one is the one dialled.
func TestMixedAddressesDialTheAllowedOne(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	h, err := NewHTTP(&HTTPConfig{
		Resolver:      fakeResolver(t, [4]byte{127, 0, 0, 1}, [4]byte{127, 0, 0, 2}),
		AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		AllowHTTP:     true,
	})
	require.NoError(t, err)
	defer h.Close()
	res := h.Send(context.Background(), testDelivery(fmt.Sprintf("http://mixed.example:%d/inbox", port)))
	require.Equal(t, Delivered, res.Outcome, res.Reason)
}

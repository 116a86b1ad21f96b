package queue

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/signer"
)

// Contradictory settings of the default sender are refused by New with an
// error that names the fields, instead of one silently winning.
func TestNewRefusesContradictorySenderSettings(t *testing.T) {
	t.Parallel()
	keys := &signer.StaticKeys{}
	sig, err := signer.New(keys, nil)
	require.NoError(t, err)
	for _, tt := range []struct {
		name string
		snd  sender.Sender
		cfg  Config
		want string
	}{
		{"nothing signs", nil, Config{}, "Config.HTTP.Unsigned"},
		{"keys and signer", nil, Config{Keys: keys, HTTP: &sender.HTTPConfig{Signer: sig}}, "both Config.Keys and Config.HTTP.Signer"},
		{"keys and unsigned", nil, Config{Keys: keys, HTTP: &sender.HTTPConfig{Unsigned: true}}, "Unsigned contradicts Config.Keys"},
		{"signer and unsigned", nil, Config{HTTP: &sender.HTTPConfig{Signer: sig, Unsigned: true}}, "Unsigned contradicts HTTPConfig.Signer"},
		{"plain http the sender refuses", nil, Config{AllowHTTP: true, HTTP: &sender.HTTPConfig{Unsigned: true}}, "set Config.HTTP.AllowHTTP"},
		{"keys with own sender", &sendertest.Fake{}, Config{Keys: keys}, "New was given a sender"},
		{"HTTP with own sender", &sendertest.Fake{}, Config{HTTP: &sender.HTTPConfig{AllowLoopback: true}}, "New was given a sender"},
	} {
		cfg := tt.cfg
		cfg.Logger = quietLogger()
		_, err := New(newMemory(), tt.snd, &cfg)
		require.ErrorContains(t, err, tt.want, tt.name)
	}
}

// One place configures unsigned delivery to a plain http loopback inbox:
// Config.HTTP. Its AllowHTTP is also what the queue accepts at enqueue.
func TestDefaultSenderUnsignedToLoopbackFromOnePlace(t *testing.T) {
	t.Parallel()
	inbox := inboxtest.New(nil)
	defer inbox.Close()
	cfg := testConfig()
	cfg.HTTP = &sender.HTTPConfig{AllowLoopback: true, AllowHTTP: true, Unsigned: true}
	q := startQueue(t, newMemory(), nil, cfg)
	enqueueAll(t, q, note(1, inbox.Inbox()))
	require.NoError(t, inbox.Wait(t.Context(), 1), inbox.LastRejection())

	// Without HTTP.AllowHTTP the same inbox is refused at enqueue.
	cfg = testConfig()
	cfg.HTTP = &sender.HTTPConfig{AllowLoopback: true, Unsigned: true}
	strict, err := New(newMemory(), nil, cfg)
	require.NoError(t, err)
	_, err = strict.Enqueue(t.Context(), note(2, inbox.Inbox()))
	require.ErrorContains(t, err, `scheme "http" not allowed`)
}

// A Signer given in Config.HTTP signs the default sender's requests; it is
// no longer replaced.
func TestDefaultSenderUsesTheGivenSigner(t *testing.T) {
	t.Parallel()
	cfg, icfg := signingSetup(t)
	sig, err := signer.New(cfg.Keys, nil)
	require.NoError(t, err)
	cfg.Keys = nil
	cfg.HTTP.Signer = sig
	inbox := inboxtest.New(icfg)
	defer inbox.Close()
	q := startQueue(t, newMemory(), nil, cfg)
	enqueueAll(t, q, note(1, inbox.Inbox()))
	require.NoError(t, inbox.Wait(t.Context(), 1), inbox.LastRejection())
	require.Zero(t, inbox.Stats().Rejected)
}

// connCounter counts a test server's open connections.
type connCounter struct {
	mu      sync.Mutex
	open    int
	changed chan struct{}
}

func (c *connCounter) track(_ net.Conn, s http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s {
	case http.StateNew:
		c.open++
	case http.StateClosed, http.StateHijacked:
		c.open--
	default:
		return
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitOpen waits until n connections are open, or ctx ends.
func (c *connCounter) waitOpen(ctx context.Context, n int) (int, error) {
	for {
		c.mu.Lock()
		open, changed := c.open, c.changed
		c.mu.Unlock()
		if open == n {
			return open, nil
		}
		select {
		case <-ctx.Done():
			return open, ctx.Err()
		case <-changed:
		}
	}
}

// Stop closes the default sender's idle connections: a stopped queue holds
// no connection open to any inbox.
func TestStopClosesTheDefaultSendersIdleConnections(t *testing.T) {
	t.Parallel()
	conns := &connCounter{changed: make(chan struct{})}
	delivered := make(chan struct{}, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		delivered <- struct{}{}
	}))
	srv.Config.ConnState = conns.track
	srv.Start()
	defer srv.Close()

	cfg := testConfig()
	cfg.HTTP = &sender.HTTPConfig{AllowLoopback: true, AllowHTTP: true, Unsigned: true}
	q, err := New(newMemory(), nil, cfg)
	require.NoError(t, err)
	require.NoError(t, q.Start(t.Context()))
	enqueueAll(t, q, note(1, srv.URL+"/inbox"), note(2, srv.URL+"/inbox"))
	for range 2 {
		<-delivered
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.NoError(t, q.Stop(ctx))
	open, err := conns.waitOpen(ctx, 0)
	require.NoError(t, err, "%d connections still open after Stop", open)
}

// The default sender keeps an idle connection for every request a domain
// may have in flight: a domain sending 32 at a time, wave after wave,
// dials 32 connections, not 32 more each wave beyond the sender's default
// idle pool of 16.
func TestDefaultSenderKeepsAConnectionPerRequestInFlight(t *testing.T) {
	t.Parallel()
	const perWave, waves = 32, 3
	var (
		mu      sync.Mutex
		dials   int
		waiting int
		release = make(chan struct{})
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		waiting++
		wave := release
		if waiting == perWave { // the whole wave is in flight: let it go
			waiting = 0
			close(release)
			release = make(chan struct{})
		}
		mu.Unlock()
		<-wave
		w.WriteHeader(http.StatusAccepted)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			dials++
			mu.Unlock()
		}
	}
	srv.Start()
	defer srv.Close()

	cfg := testConfig()
	cfg.HTTP = &sender.HTTPConfig{AllowLoopback: true, AllowHTTP: true, Unsigned: true}
	cfg.MaxInFlightPerDomain, cfg.FixedInFlight = perWave, true
	q := startQueue(t, newMemory(), nil, cfg)
	var acts []Activity
	for i := range perWave * waves {
		acts = append(acts, note(i, srv.URL+"/inbox"))
	}
	ids := enqueueAll(t, q, acts...)
	eventually(t, func() bool {
		ws := q.workerList()
		return len(ws) == 1 && ws[0].snapshot().Cursor == ids[len(ids)-1]
	}, "not everything was delivered")
	mu.Lock()
	defer mu.Unlock()
	require.LessOrEqual(t, dials, perWave, "connections were dialled again for every wave")
}

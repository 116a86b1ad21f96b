package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/internal/leakcheck"
	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/store/postgres"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

const actor = "https://local.example/users/alice"

// TestWorkerDeliversAndStopsGracefully runs the worker with keys looked up
// by SQL, root CAs from a PEM file and a listener for /status and
// /metrics, enqueues from another "process" that drains the queue through
// the store, checks the listener, and stops the worker with SIGTERM:
// everything is delivered, signed, and the leases are released.
func TestWorkerDeliversAndStopsGracefully(t *testing.T) {
	db := pgtest.New(t, nil)
	ctx := t.Context()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: must(x509.MarshalPKCS8PrivateKey(key))})
	keys := pgx.Identifier{db.Schema, "actor_keys"}.Sanitize()
	_, err = db.Pool.Exec(ctx, "CREATE TABLE "+keys+" (actor text PRIMARY KEY, key_id text, pem text)")
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, "INSERT INTO "+keys+" VALUES ($1, $2, $3)", actor, actor+"#main-key", string(pemKey))
	require.NoError(t, err)
	inbox := inboxtest.New(&inboxtest.Config{Keys: map[string]*rsa.PublicKey{actor + "#main-key": &key.PublicKey}})
	defer inbox.Close()
	// The application's followers, which the worker reads with
	// -audience-sql: the inbox's domain has no known shared inbox.
	followersTable := pgx.Identifier{db.Schema, "followers"}.Sanitize()
	_, err = db.Pool.Exec(ctx, "CREATE TABLE "+followersTable+" (collection text, inbox text)")
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, "INSERT INTO "+followersTable+" VALUES ($1, $2)", actor+"/followers", inbox.Inbox())
	require.NoError(t, err)
	audienceSQL := "SELECT inbox FROM " + followersTable + " WHERE collection = $1"
	// An https inbox whose certificate only -tls-roots makes trusted.
	var tlsReceived atomic.Int64
	tlsInbox := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tlsReceived.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer tlsInbox.Close()
	roots := filepath.Join(t.TempDir(), "roots.pem")
	require.NoError(t, os.WriteFile(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsInbox.Certificate().Raw}), 0o600))

	listening := make(chan net.Addr, 1)
	result := make(chan error, 1)
	go func() {
		result <- runUntilSignal(options{
			databaseURL: db.ConnString,
			schema:      db.Schema,
			owner:       "worker-1",
			keySQL:      "SELECT key_id, pem FROM " + keys + " WHERE actor = $1",
			audienceSQL: audienceSQL,
			migrate:     true,
			stopTimeout: 2 * time.Second,
			tlsRoots:    roots,
			listen:      "127.0.0.1:0",
			listening:   func(a net.Addr) { listening <- a },
			queue: &queue.Config{
				HTTP: &sender.HTTPConfig{AllowLoopback: true, AllowHTTP: true},
				// A domain with nothing more to deliver saves its cursor
				// at lease renewal, every third of the TTL: what Drain,
				// reading the store, waits for.
				LeaseTTL: 3 * time.Second,
			},
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()

	// The application's process only enqueues.
	st, err := postgres.New(db.Pool, &postgres.Config{Schema: db.Schema})
	require.NoError(t, err)
	defer st.Close()
	require.Eventually(t, func() bool { v, err := st.Version(ctx); return err == nil && v > 0 }, 10*time.Second,
		10*time.Millisecond, "the worker did not migrate")
	app, err := queue.New(st, sender.SenderFunc(func(context.Context, *sender.Delivery) sender.Result {
		panic("the enqueuing process never delivers")
	}), &queue.Config{AllowHTTP: true, Resolver: sqlResolver(db.Pool, audienceSQL)})
	require.NoError(t, err)
	var last int64
	for i := range 6 {
		a := queue.Activity{
			Body: fmt.Appendf(nil, `{"id":"https://local.example/activities/%d","type":"Create","actor":%q,"object":"https://local.example/notes/%d"}`, i, actor, i),
		}
		if i%2 == 0 {
			a.Inboxes = []string{inbox.Inbox(), tlsInbox.URL + "/inbox"}
		} else {
			a.Audiences = []string{actor + "/followers"}
		}
		last, err = app.Enqueue(ctx, a)
		require.NoError(t, err)
	}
	var addr net.Addr
	select {
	case addr = <-listening:
	case err := <-result:
		t.Fatalf("the worker ended: %v", err)
	}
	// The enqueuing process waits, reading the store, until the worker
	// has delivered and saved everything.
	waitCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	require.NoError(t, app.Drain(waitCtx), "inbox %+v, last rejection %q", inbox.Stats(), inbox.LastRejection())
	require.Len(t, inbox.Received(), 6)
	for _, a := range inbox.Received() {
		require.Equal(t, actor+"#main-key", a.KeyID)
	}
	require.EqualValues(t, 3, tlsReceived.Load(), "the https inbox trusted through -tls-roots")

	// The events reach the metrics through an Observer, on its own
	// goroutine: Drain does not wait for it.
	delivered := fmt.Sprintf(`apqueue_events_total{kind="delivered",domain=%q} 6`, inbox.Domain())
	var metrics string
	require.Eventually(t, func() bool {
		metrics = get(t, "http://"+addr.String()+"/metrics", "")
		return strings.Contains(metrics, delivered)
	}, 10*time.Second, 10*time.Millisecond, "the metrics did not count 6 deliveries")
	require.Contains(t, metrics, fmt.Sprintf("apqueue_head_id %d\n", last))
	status := get(t, "http://"+addr.String()+"/status", "application/json")
	require.Contains(t, status, inbox.Domain())

	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case err := <-result:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("the worker did not stop")
	}
	doms, err := st.Domains(ctx, nil)
	require.NoError(t, err)
	require.Len(t, doms, 2)
	for _, d := range doms {
		require.Empty(t, d.Owner, "the worker kept its lease on %s", d.Domain)
		require.Equal(t, last, d.Cursor, "the worker did not save the cursor of %s", d.Domain)
	}
	_, err = http.Get("http://" + addr.String() + "/metrics")
	require.Error(t, err, "the listener outlived the worker")
}

// get returns the body of a 200 answer to a GET of url.
func get(t *testing.T, url, accept string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", url, body)
	return string(body)
}

func TestRootCAs(t *testing.T) {
	_, err := rootCAs(filepath.Join(t.TempDir(), "missing.pem"))
	require.ErrorContains(t, err, "-tls-roots")
	empty := filepath.Join(t.TempDir(), "empty.pem")
	require.NoError(t, os.WriteFile(empty, []byte("not a certificate"), 0o600))
	_, err = rootCAs(empty)
	require.ErrorContains(t, err, "no PEM certificate")
}

func TestKeySourceOptions(t *testing.T) {
	for name, o := range map[string]options{
		"none":          {},
		"both":          {keySQL: "SELECT 1", keyFile: "k.pem"},
		"file no actor": {keyFile: "k.pem"},
		"missing file":  {keyFile: "/nonexistent/k.pem", keyActor: actor},
	} {
		_, err := keySource(o, nil)
		require.Error(t, err, name)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

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
// by SQL, enqueues from another "process", and stops the worker as a signal
// would: everything is delivered, signed, and the leases are released.
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

	workerCtx, stop := context.WithCancel(ctx)
	defer stop()
	result := make(chan error, 1)
	go func() {
		result <- run(workerCtx, options{
			databaseURL: db.ConnString,
			schema:      db.Schema,
			owner:       "worker-1",
			keySQL:      "SELECT key_id, pem FROM " + keys + " WHERE actor = $1",
			audienceSQL: audienceSQL,
			migrate:     true,
			stopTimeout: 2 * time.Second,
			queue: &queue.Config{
				HTTP: &sender.HTTPConfig{AllowLoopback: true, AllowHTTP: true},
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
			a.Inboxes = []string{inbox.Inbox()}
		} else {
			a.Audiences = []string{actor + "/followers"}
		}
		last, err = app.Enqueue(ctx, a)
		require.NoError(t, err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, inbox.Wait(waitCtx, 6), "inbox %+v, last rejection %q", inbox.Stats(), inbox.LastRejection())
	for _, a := range inbox.Received() {
		require.Equal(t, actor+"#main-key", a.KeyID)
	}

	stop() // as SIGTERM does
	select {
	case err := <-result:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("the worker did not stop")
	}
	doms, err := st.Domains(ctx, nil)
	require.NoError(t, err)
	require.Len(t, doms, 1)
	require.Empty(t, doms[0].Owner, "the worker kept its lease")
	require.Equal(t, last, doms[0].Cursor, "the worker did not save its cursor")
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

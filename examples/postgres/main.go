// Command postgres shows apqueue on PostgreSQL with transactional enqueue:
// a note and the activity announcing it are written in one transaction, so
// the activity is delivered if and only if the note is saved.
//
// It migrates the queue's schema, starts a signed test inbox on loopback,
// creates a note in a transaction that commits and another in one that
// rolls back, waits until the committed one is delivered, and prints what
// the inbox received. It reads the database address from DATABASE_URL, or
// TEST_DATABASE_URL, and drops its schemas at the end unless -keep is given.
//
//	DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' go run ./examples/postgres
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
	"github.com/apqueue/apqueue/store/postgres"
)

const (
	actor = "https://local.example/users/alice"
	keyID = actor + "#main-key"
)

func main() {
	schema := flag.String("schema", "apqueue_example", "schema of the queue's tables (the app's notes go to <schema>_app)")
	keep := flag.Bool("keep", false, "keep the schemas at the end")
	flag.Parse()
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		url = os.Getenv("TEST_DATABASE_URL")
	}
	if url == "" {
		fmt.Fprintln(os.Stderr, "postgres: set DATABASE_URL, for example postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, url, *schema, *keep, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "postgres:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url, schema string, keep bool, out io.Writer) (err error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()

	// The queue's store: New checks the configuration, Migrate creates or
	// upgrades the tables, and is safe to run on every start.
	st, err := postgres.New(pool, &postgres.Config{Schema: schema})
	if err != nil {
		return err
	}
	defer st.Close()
	version, err := st.Migrate(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "schema %s at version %d\n", schema, version)

	// The application's own table, in a schema of its own.
	app := pgx.Identifier{schema + "_app"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+app+";"+
		"CREATE TABLE IF NOT EXISTS "+app+".notes (id bigserial PRIMARY KEY, content text NOT NULL)"); err != nil {
		return err
	}
	if !keep {
		defer func() {
			_, dropErr := pool.Exec(context.WithoutCancel(ctx), "DROP SCHEMA "+app+" CASCADE; DROP SCHEMA "+
				pgx.Identifier{schema}.Sanitize()+" CASCADE")
			err = errors.Join(err, dropErr)
		}()
	}

	// A remote inbox, on loopback, that verifies signatures.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	keys := &signer.StaticKeys{}
	if err := keys.Add(actor, keyID, key); err != nil {
		return err
	}
	inbox := inboxtest.New(&inboxtest.Config{Keys: map[string]*rsa.PublicKey{keyID: &key.PublicKey}})
	defer inbox.Close()

	q, err := queue.New(st, nil, &queue.Config{
		Keys:   keys,
		HTTP:   &sender.HTTPConfig{AllowLoopback: true, AllowHTTP: true}, // the inbox listens on http://127.0.0.1
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	if err := q.Start(ctx); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, q.Stop(context.WithoutCancel(ctx))) }()

	// createNote saves a note and enqueues its Create in one transaction,
	// which commits only if commit is true.
	createNote := func(content string, commit bool) (noteID int64, err error) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return 0, err
		}
		defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
		if err := tx.QueryRow(ctx, "INSERT INTO "+app+".notes (content) VALUES ($1) RETURNING id", content).Scan(&noteID); err != nil {
			return 0, err
		}
		body := fmt.Appendf(nil, `{"@context":"https://www.w3.org/ns/activitystreams",`+
			`"id":"https://local.example/notes/%d/activity","type":"Create","actor":%q,`+
			`"object":{"id":"https://local.example/notes/%d","type":"Note","content":%q}}`, noteID, actor, noteID, content)
		// One statement in tx; the activity gets its ID once tx commits.
		if err := q.EnqueueTx(ctx, st.Tx(tx), queue.Activity{Body: body, Inboxes: []string{inbox.Inbox()}}); err != nil {
			return 0, err
		}
		// Anything that fails from here on, up to Commit, takes the
		// activity with it: nothing is sent for a note that was not saved.
		if !commit {
			return noteID, tx.Rollback(ctx)
		}
		return noteID, tx.Commit(ctx)
	}

	kept, err := createNote("hello from a committed transaction", true)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "note %d saved, its activity enqueued in the same transaction\n", kept)
	dropped, err := createNote("this transaction rolls back", false)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "note %d rolled back, and its activity with it\n", dropped)

	// A marker enqueued after both: once it arrives, the rolled-back
	// activity would have arrived before it, had it existed.
	marker, err := q.Enqueue(ctx, queue.Activity{
		Body:    fmt.Appendf(nil, `{"id":"https://local.example/activities/marker","type":"Announce","actor":%q,"object":"https://local.example/notes/%d"}`, actor, kept),
		Inboxes: []string{inbox.Inbox()},
	})
	if err != nil {
		return err
	}
	// Everything enqueued so far is delivered (or dead-lettered) and saved.
	if err := q.Drain(ctx); err != nil {
		return fmt.Errorf("waiting for deliveries: %w", err)
	}
	fmt.Fprintf(out, "marker activity %d enqueued\n", marker)
	for _, a := range inbox.Received() {
		fmt.Fprintf(out, "inbox received %s (signed with %s)\n", a.ID, a.KeyID)
	}
	fmt.Fprintf(out, "statements sent by the store: %d\n", st.Stats().Statements)
	return nil
}

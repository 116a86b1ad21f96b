// Command quickstart shows apqueue at work with no setup: it starts four
// ActivityPub inboxes on loopback (a fast one, a slow one, one that fails for
// a while, one that refuses some activities), enqueues signed activities for
// all of them into an in-memory store, prints progress per domain while the
// queue delivers, and ends with a summary.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
	"github.com/apqueue/apqueue/store/memory"
)

const (
	actor      = "https://local.example/users/alice"
	keyID      = actor + "#main-key"
	activities = 40
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

type inbox struct {
	name string
	srv  *inboxtest.Server
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The local actor's key; the inboxes verify every signature with it.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	keys := &signer.StaticKeys{}
	if err := keys.Add(actor, keyID, key); err != nil {
		return err
	}
	verify := map[string]*rsa.PublicKey{keyID: &key.PublicKey}
	inboxes := []inbox{
		{"fast", inboxtest.New(&inboxtest.Config{Keys: verify})},
		{"slow (150 ms a request)", inboxtest.New(&inboxtest.Config{Keys: verify, Latency: 150 * time.Millisecond})},
		{"failing for 3 s (503, Retry-After: 1)", inboxtest.New(&inboxtest.Config{Keys: verify, Failures: inboxtest.Failures{For: 3 * time.Second, Status: 503, RetryAfter: "1"}})},
		{"refusing its first 2 (400)", inboxtest.New(&inboxtest.Config{Keys: verify, Failures: inboxtest.Failures{First: 2, Status: 400}})},
	}
	for _, in := range inboxes {
		defer in.srv.Close()
	}

	q, err := queue.New(memory.New(), nil, &queue.Config{
		Keys:       keys,
		HTTP:       &sender.HTTPConfig{AllowLoopback: true}, // the inboxes listen on 127.0.0.1
		AllowHTTP:  true,
		BackoffMin: 250 * time.Millisecond,
		BackoffMax: 2 * time.Second,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		return err
	}
	if err := q.Start(ctx); err != nil {
		return err
	}

	targets := make([]string, len(inboxes))
	for i, in := range inboxes {
		targets[i] = in.srv.Inbox()
		fmt.Printf("inbox %-40s %s\n", in.name, in.srv.Inbox())
	}
	batch := make([]queue.Activity, activities)
	for i := range batch {
		batch[i] = queue.Activity{
			Body: fmt.Appendf(nil, `{"@context":"https://www.w3.org/ns/activitystreams","id":"https://local.example/activities/%d","type":"Create","actor":%q,"object":{"id":"https://local.example/notes/%d","type":"Note","content":"hello %d"}}`,
				i, actor, i, i),
			Inboxes: targets,
		}
	}
	started := time.Now()
	ids, err := q.EnqueueMany(ctx, batch)
	if err != nil {
		return err
	}
	fmt.Printf("\nenqueued %d activities (IDs %d..%d) for %d inboxes\n\n", len(ids), ids[0], ids[len(ids)-1], len(targets))

	names := map[string]string{}
	for _, in := range inboxes {
		names[in.srv.Domain()] = in.name
	}
	ticker := time.NewTicker(500 * time.Millisecond)
	defer ticker.Stop()
	for {
		st, err := q.Stats(ctx)
		if err != nil {
			return err
		}
		printProgress(st, names, time.Since(started))
		if settled(st) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not every delivery settled in time: %w", ctx.Err())
		case <-ticker.C:
		}
	}
	final, err := q.Stats(ctx)
	if err != nil {
		return err
	}
	if err := q.Stop(ctx); err != nil {
		return err
	}
	printSummary(final, inboxes, time.Since(started))
	return nil
}

// settled reports whether every domain's cursor reached the head.
func settled(st queue.Stats) bool {
	for _, d := range st.Domains {
		if d.Cursor < st.Head {
			return false
		}
	}
	return len(st.Domains) > 0
}

func printProgress(st queue.Stats, names map[string]string, elapsed time.Duration) {
	fmt.Printf("t=%4.1fs", elapsed.Seconds())
	for _, d := range st.Domains {
		state := "ok"
		switch {
		case d.Cursor == st.Head:
			state = "done"
		case d.FailCount > 0:
			state = fmt.Sprintf("failing: %s", d.LastError)
		}
		fmt.Printf("  | %s %d/%d %s", short(names[d.Domain]), d.Cursor, st.Head, state)
	}
	fmt.Println()
}

func short(name string) string {
	if i := strings.IndexByte(name, ' '); i > 0 {
		return name[:i]
	}
	return name
}

func printSummary(st queue.Stats, inboxes []inbox, elapsed time.Duration) {
	fmt.Printf("\nsummary after %.1fs\n", elapsed.Seconds())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "inbox\tdomain\tdelivered\tretried\tdead-lettered\treceived (unique)\tduplicates\tp50 latency")
	for _, in := range inboxes {
		for _, d := range st.Domains {
			if d.Domain != in.srv.Domain() {
				continue
			}
			s := in.srv.Stats()
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", in.name, d.Domain, d.Delivered, d.Retried, d.DeadLettered, s.Unique, s.Duplicates, d.LatencyP50.Round(time.Millisecond))
		}
	}
	fmt.Fprintf(tw, "total\t\t%d\t%d\t%d\t\t\t\n", st.Delivered, st.Retried, st.DeadLettered)
	tw.Flush()
}

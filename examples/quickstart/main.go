// Command quickstart shows apqueue at work with no setup: it starts four
// ActivityPub inboxes on loopback (a fast one, a slow one, one that fails for
// a while, one that refuses some activities), enqueues signed activities for
// all of them into a durable SQLite store in a temporary directory (printed
// at start), prints progress per domain while the queue delivers, and ends
// with a summary.
//
// Stop it with Ctrl-C and start it again with the same -db: it resumes
// where it stopped, delivering what was left, to inboxes at the same
// addresses. -store memory keeps everything in memory instead.
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -db /tmp/apqueue-quickstart.db
//	go run ./examples/quickstart -store memory
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	_ "modernc.org/sqlite" // the SQLite driver; the store takes any

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/memory"
	"github.com/apqueue/apqueue/store/sqlite"
)

const (
	actor      = "https://local.example/users/alice"
	keyID      = actor + "#main-key"
	activities = 40
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

type inbox struct {
	name string
	srv  *inboxtest.Server
	// addr is the inbox's stable address, saved with the store so that a
	// resumed run reaches the same inbox URLs; it forwards to srv.
	addr string
}

// run runs the quick start with the command-line arguments args, printing
// to out, until every delivery settled or ctx ends (Ctrl-C), when it stops
// the queue gracefully so that a later run with the same -db resumes.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	fs.SetOutput(out)
	kind := fs.String("store", "sqlite", "sqlite (durable, resumable) or memory")
	dbPath := fs.String("db", "", "SQLite database file for -store sqlite (default: a new file in a temporary directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	st, addrs, closeStore, err := openStore(ctx, *kind, *dbPath, out)
	if err != nil {
		return err
	}
	defer closeStore()

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
	inboxes := []*inbox{
		{name: "fast", srv: inboxtest.New(&inboxtest.Config{Keys: verify})},
		{name: "slow (150 ms a request)", srv: inboxtest.New(&inboxtest.Config{Keys: verify, Latency: 150 * time.Millisecond})},
		{name: "failing for 3 s (503, Retry-After: 1)", srv: inboxtest.New(&inboxtest.Config{Keys: verify, Failures: inboxtest.Failures{For: 3 * time.Second, Status: 503, RetryAfter: "1"}})},
		{name: "refusing its first 2 (400)", srv: inboxtest.New(&inboxtest.Config{Keys: verify, Failures: inboxtest.Failures{First: 2, Status: 400}})},
	}
	for _, in := range inboxes {
		defer in.srv.Close()
		stopFront, err := front(in, addrs)
		if err != nil {
			return err
		}
		defer stopFront()
	}

	q, err := queue.New(st, nil, &queue.Config{
		Keys:       keys,
		HTTP:       &sender.HTTPConfig{AllowLoopback: true, AllowHTTP: true}, // the inboxes listen on http://127.0.0.1
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
	// A graceful stop saves every cursor, whether the run ends or is
	// interrupted.
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = q.Stop(stopCtx)
	}()

	targets := make([]string, len(inboxes))
	for i, in := range inboxes {
		targets[i] = "http://" + in.addr + "/users/test/inbox"
		fmt.Fprintf(out, "inbox %-40s %s\n", in.name, targets[i])
	}
	started := time.Now()
	head, err := st.Head(ctx)
	if err != nil {
		return err
	}
	if head > 0 {
		fmt.Fprintf(out, "\nresuming: %d activities in the log from an earlier run\n\n", head)
	} else {
		batch := make([]queue.Activity, activities)
		for i := range batch {
			batch[i] = queue.Activity{
				Body: fmt.Appendf(nil, `{"@context":"https://www.w3.org/ns/activitystreams","id":"https://local.example/activities/%d","type":"Create","actor":%q,"object":{"id":"https://local.example/notes/%d","type":"Note","content":"hello %d"}}`,
					i, actor, i, i),
				Inboxes: targets,
			}
		}
		ids, err := q.EnqueueMany(ctx, batch)
		if err != nil {
			return interrupted(ctx, out, err)
		}
		fmt.Fprintf(out, "\nenqueued %d activities (IDs %d..%d) for %d inboxes\n\n", len(ids), ids[0], ids[len(ids)-1], len(targets))
	}

	names := map[string]string{}
	for _, in := range inboxes {
		names[in.addr] = in.name
	}
	// Drain returns once every delivery is settled; meanwhile, progress.
	drained := make(chan error, 1)
	go func() { drained <- q.Drain(ctx) }()
	ticker := time.NewTicker(500 * time.Millisecond)
	defer ticker.Stop()
	for done := false; !done; {
		var drainErr error
		select {
		case drainErr = <-drained:
			done = true
		case <-ticker.C:
		}
		if drainErr != nil {
			return interrupted(ctx, out, fmt.Errorf("not every delivery settled in time: %w", drainErr))
		}
		st, err := q.Stats(ctx)
		if err != nil {
			return interrupted(ctx, out, err)
		}
		printProgress(out, st, names, time.Since(started))
	}
	final, err := q.Stats(ctx)
	if err != nil {
		return err
	}
	printSummary(out, final, inboxes, time.Since(started))
	return nil
}

// interrupted returns nil, after saying how to resume, when ctx was
// cancelled (Ctrl-C), and err otherwise. The queue's graceful stop, which
// saves every cursor, runs as run returns.
func interrupted(ctx context.Context, out io.Writer, err error) error {
	if !errors.Is(ctx.Err(), context.Canceled) {
		return err
	}
	fmt.Fprintln(out, "\ninterrupted: the queue saves its progress; run again with the same -db to resume")
	return nil
}

// openStore opens the store of kind, and returns it with the inboxes'
// saved addresses (a SQLite store keeps them in a table of its own file)
// and a function that closes what it opened.
func openStore(ctx context.Context, kind, path string, out io.Writer) (store.Store, *addrBook, func(), error) {
	switch kind {
	case "memory":
		fmt.Fprintln(out, "store: in memory (nothing survives the run)")
		return memory.New(), &addrBook{}, func() {}, nil
	case "sqlite":
	default:
		return nil, nil, nil, fmt.Errorf("-store %q: want sqlite or memory", kind)
	}
	if path == "" {
		dir, err := os.MkdirTemp("", "apqueue-quickstart-")
		if err != nil {
			return nil, nil, nil, err
		}
		path = filepath.Join(dir, "quickstart.db")
	}
	fmt.Fprintf(out, "store: SQLite file %s (stop with Ctrl-C, resume with -db %s)\n", path, path)
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=synchronous(full)&_txlock=immediate")
	if err != nil {
		return nil, nil, nil, err
	}
	st, err := sqlite.New(db, nil)
	if err == nil {
		_, err = st.Migrate(ctx)
	}
	if err == nil {
		_, err = db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS quickstart_inboxes (name TEXT PRIMARY KEY, addr TEXT NOT NULL)`)
	}
	if err != nil {
		db.Close()
		return nil, nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	return st, &addrBook{db: db}, func() {
		st.Close()
		db.Close()
	}, nil
}

// addrBook remembers the address of each inbox, by name, in the SQLite
// file; without a file (the memory store) every run gets new addresses.
type addrBook struct {
	db *sql.DB
}

// listen listens on the saved address of the inbox named name, or on a new
// loopback port below the ephemeral range that it saves.
func (b *addrBook) listen(name string) (net.Listener, error) {
	if b.db == nil {
		return net.Listen("tcp", "127.0.0.1:0")
	}
	var addr string
	if err := b.db.QueryRow(`SELECT addr FROM quickstart_inboxes WHERE name = ?`, name).Scan(&addr); err != nil {
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
		ln, err := listenBelowEphemeral()
		if err != nil {
			return nil, fmt.Errorf("inbox %s: %w", name, err)
		}
		_, err = b.db.Exec(`INSERT INTO quickstart_inboxes (name, addr) VALUES (?, ?)`, name, ln.Addr().String())
		if err != nil {
			ln.Close()
			return nil, err
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("inbox %s: listen on %s: %w", name, addr, err)
	}
	return ln, nil
}

// listenBelowEphemeral listens on a free loopback port below the system's
// range of ephemeral ports. The kernel hands out ports from that range to
// every outgoing connection and to every listener asking for any port, so
// one of those could hold an address taken from it when a resumed run
// listens there again; a port below it is taken only by a program that
// names it.
//
// On a system whose ephemeral range starts at lowestStablePort or below, it
// listens on a port from the range.
func listenBelowEphemeral() (net.Listener, error) {
	if first := firstEphemeralPort(); first > lowestStablePort {
		for range 32 {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lowestStablePort+mrand.IntN(first-lowestStablePort)))
			if err == nil {
				return ln, nil
			}
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// lowestStablePort is the lowest port listenBelowEphemeral takes: above
// the ports well-known services use.
const lowestStablePort = 10000

// firstEphemeralPort is the first port of the system's ephemeral range:
// Linux says it in /proc; 32768 (Linux's default, below the 49152 of
// macOS, the BSDs and Windows) elsewhere.
func firstEphemeralPort() int {
	first := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var last int
		if _, err := fmt.Sscan(string(b), &first, &last); err != nil {
			return 32768
		}
	}
	return first
}

// front serves the inbox at its stable address, forwarding every request
// (its Host header, which the signature covers, unchanged) to the test
// inbox, and returns a function that stops it.
func front(in *inbox, addrs *addrBook) (func(), error) {
	ln, err := addrs.listen(in.name)
	if err != nil {
		return nil, err
	}
	in.addr = ln.Addr().String()
	target, err := url.Parse(in.srv.URL())
	if err != nil {
		ln.Close()
		return nil, err
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	transport := &http.Transport{}
	proxy.Transport = transport
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	return func() {
		srv.Close()
		transport.CloseIdleConnections()
	}, nil
}

func printProgress(out io.Writer, st queue.Stats, names map[string]string, elapsed time.Duration) {
	fmt.Fprintf(out, "t=%4.1fs", elapsed.Seconds())
	for _, d := range st.Domains {
		state := "ok"
		switch {
		case d.Cursor == st.Head:
			state = "done"
		case d.FailCount > 0:
			state = fmt.Sprintf("failing: %s", d.LastError)
		}
		fmt.Fprintf(out, "  | %s %d/%d %s", short(names[d.Domain]), d.Cursor, st.Head, state)
	}
	fmt.Fprintln(out)
}

func short(name string) string {
	if i := strings.IndexByte(name, ' '); i > 0 {
		return name[:i]
	}
	return name
}

func printSummary(out io.Writer, st queue.Stats, inboxes []*inbox, elapsed time.Duration) {
	fmt.Fprintf(out, "\nsummary after %.1fs\n", elapsed.Seconds())
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "inbox\tdomain\tdelivered\tretried\tdead-lettered\treceived (unique)\tduplicates\tp50 latency")
	for _, in := range inboxes {
		for _, d := range st.Domains {
			if d.Domain != in.addr {
				continue
			}
			s := in.srv.Stats()
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", in.name, d.Domain, d.Delivered, d.Retried, d.DeadLettered, s.Unique, s.Duplicates, d.LatencyP50.Round(time.Millisecond))
		}
	}
	fmt.Fprintf(tw, "total\t\t%d\t%d\t%d\t\t\t\n", st.Delivered, st.Retried, st.DeadLettered)
	tw.Flush()
}

// Command worker is a standalone delivery process for apqueue on
// PostgreSQL: it enqueues nothing, and delivers what the application's
// processes enqueue into the same schema. Run as many as needed; they split
// the remote domains among themselves through leases, with no
// configuration, and take over a stopped or crashed one's domains within
// the lease TTL. SIGINT or SIGTERM stops it gracefully: it stops
// dispatching, waits for requests in flight (up to -stop-timeout), saves
// every cursor and releases its leases so that the others take over at once.
//
// Signing keys are looked up in the application's database with -key-sql, a
// query taking the actor IRI as $1 and returning the key ID and the
// PEM-encoded RSA private key; or, for a single actor, read from -key-file.
//
// Audiences (for example followers collections) are resolved with
// -audience-sql, a query taking the audience key as $1 and returning one
// inbox URL per row (shared inboxes where known): the worker asks it for
// domains whose shared inbox is not registered. Without it, such a delivery
// becomes a dead letter that says so.
//
//	DATABASE_URL=postgres://app@db/app go run ./examples/worker \
//		-key-sql 'SELECT key_id, private_key FROM accounts WHERE uri = $1' \
//		-audience-sql 'SELECT DISTINCT coalesce(shared_inbox, inbox) FROM followers WHERE collection = $1'
//
// -tls-roots adds the root CAs of a PEM file to the system's, for inboxes
// behind a private CA. -listen serves the status page (/status, JSON with
// Accept: application/json) and Prometheus text (/metrics) on an address
// for the operator; mount it behind your own access control.
//
// Behind pgBouncer in transaction pooling mode, add
// ?default_query_exec_mode=exec to DATABASE_URL and either -poll-only or
// -listen-url with a direct connection string for LISTEN.
//
// The README's "Running the standalone worker" section shows a systemd
// unit.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/apqueue/apqueue/examples/internal/promtext"
	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
	"github.com/apqueue/apqueue/store/postgres"
)

// options are the worker's settings, from flags and the environment.
type options struct {
	databaseURL string
	schema      string
	owner       string
	keySQL      string
	keyFile     string
	keyActor    string
	keyID       string
	audienceSQL string
	listenURL   string
	pollOnly    bool
	migrate     bool
	stopTimeout time.Duration
	tlsRoots    string
	listen      string
	// queue, when set, is the base of the queue's configuration (tests use
	// it to reach loopback inboxes).
	queue *queue.Config
	// listening, when set, is told the address -listen serves on.
	listening func(net.Addr)
}

func main() {
	var o options
	flag.StringVar(&o.schema, "schema", postgres.SchemaDefault, "schema of the queue's tables")
	flag.StringVar(&o.owner, "owner", "", "name of this process in leases (default: host name, PID and a random suffix)")
	flag.StringVar(&o.keySQL, "key-sql", "", "query returning (key ID, PEM private key) of the actor given as $1")
	flag.StringVar(&o.keyFile, "key-file", "", "PEM private key of the single actor -actor, with key ID -key-id")
	flag.StringVar(&o.keyActor, "actor", "", "actor IRI of -key-file")
	flag.StringVar(&o.keyID, "key-id", "", "key ID of -key-file (default: <actor>#main-key)")
	flag.StringVar(&o.audienceSQL, "audience-sql", "", "query returning the inbox URLs (one per row) of the audience given as $1")
	flag.StringVar(&o.listenURL, "listen-url", "", "direct connection string for LISTEN, when DATABASE_URL goes through pgBouncer")
	flag.BoolVar(&o.pollOnly, "poll-only", false, "do not LISTEN; poll for new activities")
	flag.BoolVar(&o.migrate, "migrate", true, "create or upgrade the queue's tables at start")
	flag.DurationVar(&o.stopTimeout, "stop-timeout", 10*time.Second, "how long a graceful stop waits for requests in flight")
	flag.StringVar(&o.tlsRoots, "tls-roots", "", "PEM file of root CAs trusted for inboxes, in addition to the system's")
	flag.StringVar(&o.listen, "listen", "", "address serving /status and /metrics (for example 127.0.0.1:9464; default: none)")
	flag.Parse()
	o.databaseURL = os.Getenv("DATABASE_URL")
	if o.databaseURL == "" {
		o.databaseURL = os.Getenv("TEST_DATABASE_URL")
	}

	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := runUntilSignal(o, logger); err != nil {
		logger.Error("worker failed", "error", err)
		os.Exit(1)
	}
}

// runUntilSignal delivers until SIGINT or SIGTERM, then stops gracefully.
func runUntilSignal(o options, logger *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return run(ctx, o, logger)
}

// run delivers until ctx ends, then stops gracefully.
func run(ctx context.Context, o options, logger *slog.Logger) error {
	if o.databaseURL == "" {
		return errors.New("set DATABASE_URL")
	}
	pool, err := pgxpool.New(ctx, o.databaseURL)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer pool.Close()
	st, err := postgres.New(pool, &postgres.Config{
		Schema:           o.schema,
		PollOnly:         o.pollOnly,
		ListenConnString: o.listenURL,
		Logger:           logger,
	})
	if err != nil {
		return err
	}
	defer st.Close()
	if o.migrate {
		v, err := st.Migrate(ctx)
		if err != nil {
			return err
		}
		logger.InfoContext(ctx, "schema ready", "schema", o.schema, "version", v)
	} else if v, err := st.Version(ctx); err != nil {
		return err
	} else if v == 0 {
		return fmt.Errorf("schema %s is not migrated; run with -migrate", o.schema)
	}

	cfg := &queue.Config{}
	if o.queue != nil {
		c := *o.queue
		cfg = &c
	}
	if cfg.Keys == nil {
		keys, err := keySource(o, pool)
		if err != nil {
			return err
		}
		cfg.Keys = keys
	}
	if cfg.Resolver == nil && o.audienceSQL != "" {
		cfg.Resolver = sqlResolver(pool, o.audienceSQL)
	}
	if o.owner != "" {
		cfg.OwnerID = o.owner
	}
	if o.tlsRoots != "" {
		roots, err := rootCAs(o.tlsRoots)
		if err != nil {
			return err
		}
		hc := sender.HTTPConfig{}
		if cfg.HTTP != nil {
			hc = *cfg.HTTP
		}
		hc.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		cfg.HTTP = &hc
	}
	counters := promtext.NewCounters()
	if cfg.Observer == nil {
		cfg.Observer = counters
	}
	cfg.StopTimeout = o.stopTimeout
	cfg.Logger = logger
	q, err := queue.New(st, nil, cfg)
	if err != nil {
		return err
	}
	var srv *http.Server
	if o.listen != "" {
		ln, err := net.Listen("tcp", o.listen)
		if err != nil {
			return fmt.Errorf("-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/status", q.StatusHandler())
		mux.Handle("/metrics", promtext.Handler(q, counters))
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln) //nolint:errcheck // ends with Shutdown
		defer srv.Close()
		logger.InfoContext(ctx, "serving /status and /metrics", "addr", ln.Addr().String())
		if o.listening != nil {
			o.listening(ln.Addr())
		}
	}
	if err := q.Start(ctx); err != nil {
		return err
	}
	logger.InfoContext(ctx, "worker delivering; SIGINT or SIGTERM stops it")
	<-ctx.Done()

	logger.Info("stopping: waiting for requests in flight, saving cursors, releasing leases")
	stopCtx, cancel := context.WithTimeout(context.Background(), o.stopTimeout+5*time.Second)
	defer cancel()
	if err := q.Stop(stopCtx); err != nil {
		return err
	}
	if srv != nil {
		// The status page answers until the queue has stopped.
		if err := srv.Shutdown(stopCtx); err != nil {
			return fmt.Errorf("closing -listen: %w", err)
		}
	}
	logger.Info("stopped", "statements", st.Stats().Statements)
	return nil
}

// rootCAs returns the system's root CAs with those of a PEM file added.
func rootCAs(file string) (*x509.CertPool, error) {
	pemCerts, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("-tls-roots: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(pemCerts) {
		return nil, fmt.Errorf("-tls-roots: no PEM certificate in %s", file)
	}
	return roots, nil
}

// sqlResolver resolves an audience with a query taking its key as $1 and
// returning one inbox URL per row.
func sqlResolver(pool *pgxpool.Pool, query string) queue.Resolver {
	return queue.ResolverFunc(func(ctx context.Context, audience string) ([]string, error) {
		rows, err := pool.Query(ctx, query, audience)
		if err != nil {
			return nil, fmt.Errorf("audience %s: %w", audience, err)
		}
		inboxes, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("audience %s: %w", audience, err)
		}
		return inboxes, nil
	})
}

// keySource returns the actors' signing keys as the options say.
func keySource(o options, pool *pgxpool.Pool) (signer.KeySource, error) {
	switch {
	case o.keySQL != "" && o.keyFile != "":
		return nil, errors.New("give -key-sql or -key-file, not both")
	case o.keySQL != "":
		return signer.NewPEMKeys(func(ctx context.Context, actor string) (string, []byte, error) {
			var keyID, pemKey string
			err := pool.QueryRow(ctx, o.keySQL, actor).Scan(&keyID, &pemKey)
			if err != nil {
				return "", nil, fmt.Errorf("key of %s: %w", actor, err)
			}
			return keyID, []byte(pemKey), nil
		}, 0), nil
	case o.keyFile != "":
		if o.keyActor == "" {
			return nil, errors.New("-key-file needs -actor")
		}
		pemKey, err := os.ReadFile(o.keyFile)
		if err != nil {
			return nil, err
		}
		keyID := o.keyID
		if keyID == "" {
			keyID = o.keyActor + "#main-key"
		}
		keys := &signer.StaticKeys{}
		if err := keys.AddPEM(o.keyActor, keyID, pemKey); err != nil {
			return nil, err
		}
		return keys, nil
	}
	return nil, errors.New("give -key-sql or -key-file: the worker signs every delivery")
}

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
// Behind pgBouncer in transaction pooling mode, add
// ?default_query_exec_mode=exec to DATABASE_URL and either -poll-only or
// -listen-url with a direct connection string for LISTEN.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/apqueue/apqueue/queue"
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
	// queue, when set, is the base of the queue's configuration (tests use
	// it to reach loopback inboxes).
	queue *queue.Config
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
	flag.Parse()
	o.databaseURL = os.Getenv("DATABASE_URL")
	if o.databaseURL == "" {
		o.databaseURL = os.Getenv("TEST_DATABASE_URL")
	}

	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, logger); err != nil {
		logger.Error("worker failed", "error", err)
		os.Exit(1)
	}
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
	cfg.StopTimeout = o.stopTimeout
	cfg.Logger = logger
	q, err := queue.New(st, nil, cfg)
	if err != nil {
		return err
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
	logger.Info("stopped", "statements", st.Stats().Statements)
	return nil
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

package postgres_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/postgres"
)

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t, nil)
	cases := []struct {
		name string
		cfg  *postgres.Config
		ok   bool
	}{
		{"nil config", nil, true},
		{"default schema", &postgres.Config{}, true},
		{"plain schema", &postgres.Config{Schema: "fedi_queue2"}, true},
		{"upper case", &postgres.Config{Schema: "Queue"}, false},
		{"quote", &postgres.Config{Schema: `a"b`}, false},
		{"dot", &postgres.Config{Schema: "public.x"}, false},
		{"leading digit", &postgres.Config{Schema: "1queue"}, false},
		{"too long", &postgres.Config{Schema: "a123456789012345678901234567890123456789012345678"}, false},
		{"bad listen connection string", &postgres.Config{ListenConnString: "postgres://%zz"}, false},
	}
	for _, c := range cases {
		s, err := postgres.New(db.Pool, c.cfg)
		if c.ok {
			require.NoError(t, err, c.name)
			s.Close()
			continue
		}
		require.ErrorIs(t, err, store.ErrInvalid, c.name)
	}
	_, err := postgres.New(nil, nil)
	require.ErrorIs(t, err, store.ErrInvalid)

	s, err := postgres.New(db.Pool, nil)
	require.NoError(t, err)
	require.Equal(t, postgres.SchemaDefault, s.Schema())

	// The longest schema name works, NOTIFY channel included.
	longest := db.Schema + "_" + strings.Repeat("x", 48-len(db.Schema)-1)
	t.Cleanup(func() {
		_, _ = db.Pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+longest+" CASCADE")
	})
	s, err = postgres.New(db.Pool, &postgres.Config{Schema: longest})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Migrate(t.Context())
	require.NoError(t, err)
	appendOne(t, s, "a.example")
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t, nil)
	ctx := t.Context()
	s, err := postgres.New(db.Pool, &postgres.Config{Schema: db.Schema})
	require.NoError(t, err)
	defer s.Close()

	v, err := s.Version(ctx)
	require.NoError(t, err)
	require.Zero(t, v, "version before Migrate")
	_, err = s.Head(ctx)
	require.ErrorIs(t, err, postgres.ErrNotMigrated)

	v, err = s.Migrate(ctx)
	require.NoError(t, err)
	require.Equal(t, postgres.LatestVersion(), v)
	require.Positive(t, v)
	id := appendOne(t, s, "a.example")

	// Again: nothing changes, data is kept.
	v, err = s.Migrate(ctx)
	require.NoError(t, err)
	require.Equal(t, postgres.LatestVersion(), v)
	got, err := s.Version(ctx)
	require.NoError(t, err)
	require.Equal(t, v, got)
	require.Equal(t, []int64{id}, readAll(t, s, 0))
}

// TestNewLibraryOnOldSchema checks that a library newer than the schema
// says so: a missing column is ErrNotMigrated, and Migrate fixes it.
func TestNewLibraryOnOldSchema(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, nil)
	ctx := t.Context()
	// Undo migrations 2 and 3 (and the trigger of 9 that reads the column
	// of 2), as if only version 1 had been applied.
	_, err := db.Pool.Exec(ctx, "DROP TRIGGER domains_move_owner_mark_on_update ON "+db.Schema+".domains; "+
		"ALTER TABLE "+db.Schema+".domains DROP COLUMN revision; "+
		"ALTER TABLE "+db.Schema+".pending_appends DROP COLUMN reserved_at; "+
		"DELETE FROM "+db.Schema+".schema_migrations WHERE version > 1")
	require.NoError(t, err)
	v, err := s.Version(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, v)
	_, err = s.Domains(ctx, nil)
	require.ErrorIs(t, err, postgres.ErrNotMigrated)

	v, err = s.Migrate(ctx)
	require.NoError(t, err)
	require.Equal(t, postgres.LatestVersion(), v)
	_, err = s.Domains(ctx, nil)
	require.NoError(t, err)
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.New(t, &pgtest.Options{Mode: m.mode, MaxConns: 8})
			// The schema does not exist yet either: Migrate creates it.
			schema := db.Schema + "_new"
			t.Cleanup(func() {
				_, _ = db.Pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			})
			var g errgroup.Group
			for range 6 {
				g.Go(func() error {
					s, err := postgres.New(db.Pool, &postgres.Config{Schema: schema})
					if err != nil {
						return err
					}
					defer s.Close()
					v, err := s.Migrate(t.Context())
					if err != nil {
						return err
					}
					if v != postgres.LatestVersion() {
						return errors.New("migrated to the wrong version")
					}
					return nil
				})
			}
			require.NoError(t, g.Wait())
			s, err := postgres.New(db.Pool, &postgres.Config{Schema: schema})
			require.NoError(t, err)
			defer s.Close()
			var n int
			require.NoError(t, db.Pool.QueryRow(t.Context(),
				"SELECT count(*) FROM "+pgx.Identifier{schema, "schema_migrations"}.Sanitize()).Scan(&n))
			require.Equal(t, postgres.MigrationCount(), n, "a migration was recorded twice")
			appendOne(t, s)
		})
	}
}

// TestListenReconnects terminates the listener's connection on the server
// and checks that notifications resume, with a wake-up on reconnection.
func TestListenReconnects(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var calls atomic.Int64
	result := make(chan error, 1)
	go func() { result <- s.Listen(ctx, func() { calls.Add(1) }) }()

	channel := `LISTEN "` + db.Schema + `_activities"`
	listenerPID := func() int32 {
		var pid int32
		err := db.Pool.QueryRow(t.Context(), "SELECT pid FROM pg_stat_activity WHERE query = $1", channel).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0
		}
		require.NoError(t, err)
		return pid
	}
	var pid int32
	require.Eventually(t, func() bool { pid = listenerPID(); return pid != 0 }, 5*time.Second, 10*time.Millisecond)
	// Once it listens, Listen wakes the caller without an append: one made
	// between the caller's last read and LISTEN was not notified.
	require.Eventually(t, func() bool { return calls.Load() > 0 }, 5*time.Second, 10*time.Millisecond,
		"no wake-up once listening")
	started := calls.Load()
	require.Eventually(t, func() bool {
		appendOne(t, s)
		return calls.Load() > started
	}, 5*time.Second, 10*time.Millisecond, "no notification before the disconnection")

	var ok bool
	require.NoError(t, db.Pool.QueryRow(t.Context(), "SELECT pg_terminate_backend($1)", pid).Scan(&ok))
	require.True(t, ok)
	require.Eventually(t, func() bool { p := listenerPID(); return p != 0 && p != pid }, 10*time.Second, 10*time.Millisecond,
		"the listener did not reconnect")
	before := calls.Load()
	require.Eventually(t, func() bool {
		appendOne(t, s)
		return calls.Load() > before
	}, 5*time.Second, 10*time.Millisecond, "no notification after reconnecting")

	cancel()
	require.ErrorIs(t, <-result, context.Canceled)
}

// TestListenReplacesASilentConnection freezes the listener's connection (a
// peer gone without a reset): the health check's ping fails, and the
// listener reconnects and notifies again.
func TestListenReplacesASilentConnection(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t, nil)
	cfg := db.Pool.Config().ConnConfig
	px := newProxy(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), 0)
	u, err := url.Parse(db.ConnString)
	require.NoError(t, err)
	u.Host = px.Addr().String()
	s, _ := newStoreOn(t, db, &postgres.Config{ListenConnString: u.String(), Logger: quietLogger()})
	postgres.SetListenPing(s, 100*time.Millisecond, 300*time.Millisecond)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var calls atomic.Int64
	result := make(chan error, 1)
	go func() { result <- s.Listen(ctx, func() { calls.Add(1) }) }()
	require.Eventually(t, func() bool {
		appendOne(t, s)
		return calls.Load() > 0
	}, 5*time.Second, 10*time.Millisecond, "no notification through the proxy")

	px.Freeze()
	before := s.Stats().Statements
	require.Eventually(t, func() bool {
		n := calls.Load()
		appendOne(t, s)
		// Past the reconnection: a notification arrives again.
		return s.Stats().Statements > before+10 && calls.Load() > n
	}, 10*time.Second, 50*time.Millisecond, "the listener did not replace its silent connection")

	cancel()
	require.ErrorIs(t, <-result, context.Canceled)
}

func TestPollOnly(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, pgx.QueryExecModeSimpleProtocol, &postgres.Config{PollOnly: true})
	err := s.Listen(t.Context(), func() {})
	require.ErrorIs(t, err, store.ErrNotifyUnsupported)
	appendOne(t, s) // appends still work (and still NOTIFY, harmlessly)
}

// TestStatsCountStatements checks the statement counter the load generator
// reads: one statement per store call, AppendTx included.
func TestStatsCountStatements(t *testing.T) {
	t.Parallel()
	s, db := newStore(t, 0, nil)
	ctx := t.Context()
	start := s.Stats().Statements

	ids, err := appendedIDs(s.Append(ctx, []store.NewActivity{newActivity("a.example"), newActivity("b.example")}))
	require.NoError(t, err)
	_, err = s.Activities(ctx, 0, 10)
	require.NoError(t, err)
	leased, err := s.AcquireLeases(ctx, "owner-a", time.Minute, 10)
	require.NoError(t, err)
	for i := range leased {
		leased[i].Cursor = ids[1]
	}
	require.NoError(t, s.Checkpoint(ctx, leased, nil))
	require.Equal(t, int64(4), s.Stats().Statements-start, "a batch of two domains cost more than one statement per call")

	// Calls refused before reaching the database cost nothing.
	_, err = s.Activities(ctx, 0, 0)
	require.ErrorIs(t, err, store.ErrInvalid)
	require.Equal(t, int64(4), s.Stats().Statements-start)

	// AppendTx is one statement. The commit watcher it starts counts its
	// own polls, on its own clock: a closed store starts none, and still
	// stages.
	s.Close()
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, s.AppendTx(ctx, tx, []store.NewActivity{newActivity()}))
	require.Equal(t, int64(5), s.Stats().Statements-start)
	require.NoError(t, tx.Commit(ctx))
}

func TestInvalidTextIsInvalid(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, 0, nil)
	a := newActivity()
	a.Actor = "nul\x00byte"
	_, err := s.Append(t.Context(), []store.NewActivity{a})
	require.ErrorIs(t, err, store.ErrInvalid)
}

// Migrate runs on every start, so it must work for a least-privilege role
// that owns its schema but may not create schemas in the database.
func TestMigrateWithoutDatabaseCreatePrivilege(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, db := newStore(t, 0, nil)
	role := db.Schema + "_role"
	_, err := db.Pool.Exec(ctx, "CREATE ROLE "+role+" LOGIN")
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = db.Pool.Exec(ctx, "REASSIGN OWNED BY "+role+" TO CURRENT_USER")
		_, _ = db.Pool.Exec(ctx, "DROP OWNED BY "+role)
		_, _ = db.Pool.Exec(ctx, "DROP ROLE "+role)
	})
	sch := pgx.Identifier{db.Schema}.Sanitize()
	_, err = db.Pool.Exec(ctx, "ALTER SCHEMA "+sch+" OWNER TO "+role+"; GRANT ALL ON ALL TABLES IN SCHEMA "+sch+" TO "+role)
	require.NoError(t, err)
	cfg := db.Pool.Config().ConnConfig.Copy()
	cfg.User = role
	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	var canCreate bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT has_database_privilege(current_database(), 'CREATE')").Scan(&canCreate))
	require.NoError(t, conn.Close(ctx))
	if canCreate {
		t.Skip("PUBLIC may create schemas in this database; the case cannot be set up")
	}
	pcfg, err := pgxpool.ParseConfig(db.Pool.Config().ConnString())
	require.NoError(t, err)
	pcfg.ConnConfig.User = role
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	defer pool.Close()
	s2, err := postgres.New(pool, &postgres.Config{Schema: db.Schema})
	require.NoError(t, err)
	defer s2.Close()
	v, err := s2.Migrate(ctx)
	require.NoError(t, err, "Migrate on a schema already at the latest version")
	require.Equal(t, postgres.LatestVersion(), v)
}

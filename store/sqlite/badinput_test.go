package sqlite_test

import (
	"bytes"
	"database/sql"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/queuetest"
	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/sqlite"
)

// tables returns the names of the apqueue tables in db.
func tables(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE 'apqueue%' ORDER BY name`)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		out = append(out, n)
	}
	require.NoError(t, rows.Err())
	return out
}

func oneActivity(body string) []store.NewActivity {
	return []store.NewActivity{{Body: []byte(body), Domains: []string{"a.example"}, Inboxes: []string{"https://a.example/inbox"}}}
}

// TestUnsafeSettings checks that Migrate refuses connection settings that
// would lose acknowledged enqueues or fail concurrent writes, names the
// setting, and writes nothing.
func TestUnsafeSettings(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, dsn, words string
	}{
		{"in_memory", "file::memory:?" + settings, "journal_mode is memory"},
		{"journal_off", "file:" + "%s" + "?" + settings + "&_pragma=journal_mode(off)", "journal_mode is off"},
		{"synchronous_normal", "file:" + "%s" + "?_pragma=busy_timeout(5000)&_pragma=synchronous(normal)", "synchronous is 1"},
		{"synchronous_off", "file:" + "%s" + "?_pragma=busy_timeout(5000)&_pragma=synchronous(off)", "synchronous is 0"},
		{"no_busy_timeout", "file:" + "%s" + "?_pragma=synchronous(full)", "busy_timeout is 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := c.dsn
			if bytes.Contains([]byte(d), []byte("%s")) {
				d = string(bytes.Replace([]byte(d), []byte("%s"), []byte(tempPath(t)), 1))
			}
			db := openDB(t, d)
			s, err := sqlite.New(db, &sqlite.Config{Logger: queuetest.QuietLogger()})
			require.NoError(t, err)
			_, err = s.Migrate(t.Context())
			require.ErrorIs(t, err, sqlite.ErrUnsafeSettings)
			require.ErrorContains(t, err, c.words)
			require.Empty(t, tables(t, db), "a refused Migrate created tables")
		})
	}
}

// TestNotMigrated checks that a store used before Migrate says so.
func TestNotMigrated(t *testing.T) {
	t.Parallel()
	s, err := sqlite.New(openDB(t, dsn(tempPath(t), "")), nil)
	require.NoError(t, err)
	_, err = s.Append(t.Context(), oneActivity(`{"n":1}`))
	require.ErrorIs(t, err, sqlite.ErrNotMigrated)
	v, err := s.Version(t.Context())
	require.NoError(t, err)
	require.Zero(t, v)
}

// TestMigrateTwice checks that Migrate is idempotent, leaves the file in
// WAL mode, and reports the latest version.
func TestMigrateTwice(t *testing.T) {
	t.Parallel()
	path := tempPath(t)
	db := openDB(t, dsn(path, ""))
	s := storeOn(t, db, nil)
	v, err := s.Migrate(t.Context())
	require.NoError(t, err)
	require.Equal(t, sqlite.LatestVersion(), v)
	got, err := s.Version(t.Context())
	require.NoError(t, err)
	require.Equal(t, v, got)
	var mode string
	require.NoError(t, db.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode))
	require.Equal(t, "wal", mode)
}

// TestSchemaTooNew checks that a database migrated by a newer library is
// refused and left as it is.
func TestSchemaTooNew(t *testing.T) {
	t.Parallel()
	path := tempPath(t)
	db := openDB(t, dsn(path, ""))
	s := storeOn(t, db, nil)
	newer := sqlite.LatestVersion() + 1
	_, err := db.ExecContext(t.Context(), `INSERT INTO apqueue_schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)`, newer)
	require.NoError(t, err)

	_, err = s.Migrate(t.Context())
	require.ErrorIs(t, err, sqlite.ErrSchemaTooNew)
	require.ErrorContains(t, err, "schema version")
	v, err := s.Version(t.Context())
	require.NoError(t, err)
	require.Equal(t, newer, v)
}

// TestCorruptFile checks that a file that is not a database, or whose
// pages are damaged, is refused with ErrCorrupt and not overwritten.
func TestCorruptFile(t *testing.T) {
	t.Parallel()
	t.Run("not_a_database", func(t *testing.T) {
		t.Parallel()
		path := tempPath(t)
		garbage := bytes.Repeat([]byte("not an sqlite file "), 400)
		require.NoError(t, os.WriteFile(path, garbage, 0o600))
		s, err := sqlite.New(openDB(t, dsn(path, "")), nil)
		require.NoError(t, err)
		_, err = s.Migrate(t.Context())
		require.ErrorIs(t, err, sqlite.ErrCorrupt)
		_, err = s.Append(t.Context(), oneActivity(`{"n":1}`))
		require.ErrorIs(t, err, sqlite.ErrCorrupt)
		after, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, garbage, after, "the file was written")
	})
	t.Run("damaged_pages", func(t *testing.T) {
		t.Parallel()
		path := tempPath(t)
		db := openDB(t, dsn(path, ""))
		s := storeOn(t, db, nil)
		for i := range 20 {
			_, err := s.Append(t.Context(), oneActivity(string(bytes.Repeat([]byte{'a' + byte(i)}, 3000))))
			require.NoError(t, err)
		}
		require.NoError(t, db.Close()) // checkpoints the WAL into the file
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		require.NoError(t, err)
		st, err := f.Stat()
		require.NoError(t, err)
		// Every page but the first (the header and schema) turns to noise.
		_, err = f.WriteAt(bytes.Repeat([]byte{0xA5}, int(st.Size())-4096), 4096)
		require.NoError(t, err)
		require.NoError(t, f.Close())

		s2, err := sqlite.New(openDB(t, dsn(path, "")), nil)
		require.NoError(t, err)
		_, err = s2.Activities(t.Context(), 0, 100)
		require.ErrorIs(t, err, sqlite.ErrCorrupt)
		_, err = s2.Append(t.Context(), oneActivity(`{"n":1}`))
		require.ErrorIs(t, err, sqlite.ErrCorrupt)
	})
}

// TestReadOnly checks that a database opened read-only is refused by
// Migrate and Append with ErrReadOnly, and that reads still work.
func TestReadOnly(t *testing.T) {
	t.Parallel()
	path := tempPath(t)
	db := openDB(t, dsn(path, ""))
	s := storeOn(t, db, nil)
	ids, err := appendedIDs(s.Append(t.Context(), oneActivity(`{"n":1}`)))
	require.NoError(t, err)
	require.NoError(t, db.Close())

	ro, err := sqlite.New(openDB(t, dsn(path, "mode=ro")), &sqlite.Config{Logger: queuetest.QuietLogger()})
	require.NoError(t, err)
	_, err = ro.Migrate(t.Context())
	require.ErrorIs(t, err, sqlite.ErrReadOnly)
	_, err = ro.Append(t.Context(), oneActivity(`{"n":2}`))
	require.ErrorIs(t, err, sqlite.ErrReadOnly)
	h, err := ro.Head(t.Context())
	require.NoError(t, err)
	require.Equal(t, ids[0], h, "the refused append is visible")
}

// TestLockedBeyondBusyTimeout checks that a write lock held by another
// program for longer than busy_timeout fails Migrate and Append with
// ErrBusy after about that long, and that nothing of them is written.
func TestLockedBeyondBusyTimeout(t *testing.T) {
	t.Parallel()
	path := tempPath(t)
	s := storeOn(t, openDB(t, dsn(path, "")), nil)
	before, err := s.Head(t.Context())
	require.NoError(t, err)

	// The other program: a connection that holds the write lock.
	other := openDB(t, dsn(path, ""))
	conn, err := other.Conn(t.Context())
	require.NoError(t, err)
	_, err = conn.ExecContext(t.Context(), "BEGIN IMMEDIATE")
	require.NoError(t, err)

	const timeout = 200 * time.Millisecond
	impatient, err := sqlite.New(openDB(t, "file:"+path+"?_pragma=busy_timeout(200)&_pragma=synchronous(full)"), nil)
	require.NoError(t, err)
	started := time.Now()
	_, err = impatient.Append(t.Context(), oneActivity(`{"n":1}`))
	require.ErrorIs(t, err, sqlite.ErrBusy)
	require.GreaterOrEqual(t, time.Since(started), timeout/2, "did not wait for the lock")
	_, err = impatient.Migrate(t.Context())
	require.ErrorIs(t, err, sqlite.ErrBusy)

	_, err = conn.ExecContext(t.Context(), "ROLLBACK")
	require.NoError(t, err)
	require.NoError(t, conn.Close())
	after, err := s.Head(t.Context())
	require.NoError(t, err)
	require.Equal(t, before, after, "a failed append was written")
	ids, err := appendedIDs(impatient.Append(t.Context(), oneActivity(`{"n":2}`)))
	require.NoError(t, err, "the store works once the lock is released")
	require.Equal(t, []int64{before + 1}, ids)
}

// TestDiskFull checks that an enqueue that finds the database full fails
// with ErrFull, is not in the log, and hands out no ID that readers see.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	path := tempPath(t)
	base := openDB(t, dsn(path, ""))
	storeOn(t, base, nil)
	var pages int
	require.NoError(t, base.QueryRowContext(t.Context(), "PRAGMA page_count").Scan(&pages))

	// max_page_count makes SQLite report SQLITE_FULL as a full disk would.
	full, err := sqlite.New(openDB(t, dsn(path, "_pragma=max_page_count("+itoa(pages+8)+")")), nil)
	require.NoError(t, err)
	body := `{"content":"` + string(bytes.Repeat([]byte("x"), 2000)) + `"}`
	var (
		last   int64
		filled bool
	)
	for range 100 {
		ids, err := appendedIDs(full.Append(t.Context(), oneActivity(body)))
		if err != nil {
			require.ErrorIs(t, err, sqlite.ErrFull)
			require.Nil(t, ids)
			filled = true
			break
		}
		last = ids[0]
	}
	require.True(t, filled, "the database never filled up")
	require.Positive(t, last, "no append fitted")
	h, err := full.Head(t.Context())
	require.NoError(t, err)
	require.Equal(t, last, h, "the failed append moved the head")
	acts, err := full.Activities(t.Context(), last, 10)
	require.NoError(t, err)
	require.Empty(t, acts, "the failed append is in the log")

	// With room again, the next append gets the next ID.
	roomy := storeOn(t, openDB(t, dsn(path, "")), nil)
	ids, err := appendedIDs(roomy.Append(t.Context(), oneActivity(body)))
	require.NoError(t, err)
	require.Equal(t, []int64{last + 1}, ids)
}

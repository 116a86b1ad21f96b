package main

import (
	"bytes"
	"context"
	"database/sql"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/leakcheck"
	"github.com/apqueue/apqueue/store/sqlite"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// watcher is run's output; it calls onLine once a line containing word
// was written.
type watcher struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	word   string
	onLine func()
}

func (w *watcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.onLine != nil && strings.Contains(w.buf.String(), w.word) {
		w.onLine()
		w.onLine = nil
	}
	return len(p), nil
}

func (w *watcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestResumes interrupts a run on a SQLite file right after it enqueued,
// as Ctrl-C would, and runs it again on the same file: the second run
// enqueues nothing, delivers what was left to the inboxes at the same
// addresses, and every domain ends at the head.
func TestResumes(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "qs.db")
	ctx, cancel := context.WithCancel(t.Context())
	first := &watcher{word: "enqueued 40 activities", onLine: cancel}
	require.NoError(t, run(ctx, []string{"-db", path}, first))
	require.Contains(t, first.String(), "interrupted: the queue saves its progress")

	second := &watcher{}
	require.NoError(t, run(t.Context(), []string{"-db", path}, second))
	out := second.String()
	require.Contains(t, out, "resuming: 40 activities in the log")
	require.NotContains(t, out, "enqueued")
	require.Contains(t, out, "summary after")

	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	require.NoError(t, err)
	defer db.Close()
	st, err := sqlite.New(db, nil)
	require.NoError(t, err)
	doms, err := st.Domains(t.Context(), nil)
	require.NoError(t, err)
	require.Len(t, doms, 4)
	for _, d := range doms {
		require.Equal(t, int64(40), d.Cursor, "%s did not settle", d.Domain)
	}

	// The inboxes listened on ports no other socket is given by chance
	// between the runs (where the system leaves room below its ephemeral
	// range).
	if firstEphemeralPort() <= lowestStablePort {
		return
	}
	rows, err := db.Query(`SELECT addr FROM quickstart_inboxes`)
	require.NoError(t, err)
	defer rows.Close()
	n := 0
	for ; rows.Next(); n++ {
		var addr string
		require.NoError(t, rows.Scan(&addr))
		ap, err := netip.ParseAddrPort(addr)
		require.NoError(t, err)
		require.Less(t, int(ap.Port()), firstEphemeralPort(), "%s is in the ephemeral range", addr)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, 4, n)
}

// TestMemoryStore runs the old, in-memory quick start to the end.
func TestMemoryStore(t *testing.T) {
	t.Parallel()
	out := &watcher{}
	require.NoError(t, run(t.Context(), []string{"-store", "memory"}, out))
	require.Contains(t, out.String(), "store: in memory")
	require.Contains(t, out.String(), "summary after")
}

// TestUnknownStore checks that a wrong -store is refused.
func TestUnknownStore(t *testing.T) {
	t.Parallel()
	err := run(t.Context(), []string{"-store", "mongodb"}, &watcher{})
	require.ErrorContains(t, err, `-store "mongodb"`)
}

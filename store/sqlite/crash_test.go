package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/crashtest"
	"github.com/apqueue/apqueue/internal/queuetest"
	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/store/sqlite"
)

// envCrashPath names the database file of the crash test's children.
const envCrashPath = "APQUEUE_CRASH_PATH"

// TestCrashRecovery kills a child process that enqueues and delivers on
// the same file, with SIGKILL, six times mid-delivery, and starts it again:
// every activity a child saw enqueued, plain or in its own transaction, is
// in the log and reached every inbox, first arrivals per ordering key came
// in ID order, and re-sends stay within the checkpoint window of each
// crash (see internal/crashtest).
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("the crash test takes about 15 s")
	}
	st, path := newStore(t, nil)
	crashtest.Run(t, st, "TestCrashChild", envCrashPath+"="+path)
}

// TestCrashChild is the child process of TestCrashRecovery; it does nothing
// in a normal test run.
func TestCrashChild(t *testing.T) {
	if !crashtest.IsChild() {
		t.Skip("run by TestCrashRecovery only")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	db, err := sql.Open("sqlite", dsn(os.Getenv(envCrashPath), ""))
	require.NoError(t, err)
	defer db.Close()
	st, err := sqlite.New(db, &sqlite.Config{Logger: queuetest.QuietLogger()})
	require.NoError(t, err)
	defer st.Close()
	_, err = st.Migrate(ctx)
	require.NoError(t, err)
	crashtest.Child(t, ctx, st, func(ctx context.Context, q *queue.Queue, batch []queue.Activity) error {
		return enqueueInTx(ctx, db, q, st, batch)
	})
}

// enqueueInTx enqueues batch in a transaction of the caller's, as an
// application that writes its own rows with the activity would.
func enqueueInTx(ctx context.Context, db *sql.DB, q *queue.Queue, st *sqlite.Store, batch []queue.Activity) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := q.EnqueueManyTx(ctx, st.Tx(tx), batch); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

package postgres_test

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/crashtest"
	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/store/postgres"
)

// envCrashSchema names the schema of the crash test's children.
const envCrashSchema = "APQUEUE_CRASH_SCHEMA"

// TestCrashRecovery kills a child process that enqueues and delivers on
// the same schema, with SIGKILL, six times mid-delivery, and starts it
// again: every activity a child saw enqueued, plain or in its own
// transaction, is in the log and reached every inbox, first arrivals per
// ordering key came in ID order, and re-sends stay within the checkpoint
// window of each crash (see internal/crashtest).
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("the crash test takes about 15 s")
	}
	db := pgtest.New(t, nil)
	st, _ := newStoreOn(t, db, nil)
	crashtest.Run(t, st, "TestCrashChild", envCrashSchema+"="+db.Schema)
}

// TestCrashChild is the child process of TestCrashRecovery; it does nothing
// in a normal test run.
func TestCrashChild(t *testing.T) {
	if !crashtest.IsChild() {
		t.Skip("run by TestCrashRecovery only")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	pool, err := pgxpool.New(ctx, pgtest.URL(t))
	require.NoError(t, err)
	defer pool.Close()
	st, err := postgres.New(pool, &postgres.Config{Schema: os.Getenv(envCrashSchema), Logger: quietLogger()})
	require.NoError(t, err)
	defer st.Close()
	crashtest.Child(t, ctx, st, func(ctx context.Context, q *queue.Queue, batch []queue.Activity) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			return q.EnqueueManyTx(ctx, st.Tx(tx), batch)
		})
	})
}

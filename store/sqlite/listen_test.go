package sqlite_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/sqlite"
)

// TestListenSeesOtherProcessesAndCommits checks the two ways Listen learns
// of appends it is not told of: another process's append to the file, and
// the commit of a caller's transaction that appended through Tx. Each
// wakes the listener within a few ListenIntervals; nothing else does.
func TestListenSeesOtherProcessesAndCommits(t *testing.T) {
	t.Parallel()
	path := tempPath(t)
	db := openDB(t, dsn(path, ""))
	st := storeOn(t, db, &sqlite.Config{ListenInterval: 10 * time.Millisecond})
	other := storeOn(t, openDB(t, dsn(path, "")), nil)

	ctx, cancel := context.WithCancel(t.Context())
	woken := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() { done <- st.Listen(ctx, func() { woken <- struct{}{} }) }()
	waitWake := func(what string) {
		t.Helper()
		select {
		case <-woken:
		case <-time.After(5 * time.Second):
			t.Fatalf("no wake-up after %s", what)
		}
	}
	drain := func() {
		for {
			select {
			case <-woken:
			default:
				return
			}
		}
	}
	waitWake("Listen started") // the first read wakes the caller once
	drain()

	_, err := other.Append(ctx, oneActivity(`{"n":1}`))
	require.NoError(t, err)
	waitWake("another process's append")
	drain()

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = st.AppendTx(ctx, tx, oneActivity(`{"n":2}`))
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	waitWake("a caller's commit")

	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

// TestListenOff checks that a negative ListenInterval turns Listen off.
func TestListenOff(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t, &sqlite.Config{ListenInterval: -1})
	err := st.Listen(t.Context(), func() {})
	require.ErrorIs(t, err, store.ErrNotifyUnsupported)
}

// TestListenWakesOnCommitAtOnce checks that the commit of a caller's
// transaction that appended through this Store wakes its Listen calls
// within milliseconds, not at the next ListenInterval (an hour here), and
// that a transaction that rolls back costs no wake-up.
func TestListenWakesOnCommitAtOnce(t *testing.T) {
	t.Parallel()
	path := tempPath(t)
	db := openDB(t, dsn(path, ""))
	st := storeOn(t, db, &sqlite.Config{ListenInterval: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	woken := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() { done <- st.Listen(ctx, func() { woken <- struct{}{} }) }()
	<-woken // the first read wakes the caller once

	enqueue := func(commit bool) {
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = st.AppendTx(ctx, tx, oneActivity(`{"n":1}`))
		require.NoError(t, err)
		if commit {
			require.NoError(t, tx.Commit())
		} else {
			require.NoError(t, tx.Rollback())
		}
	}
	enqueue(false)
	enqueue(true)
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("the commit did not wake the listener")
	}
	require.Empty(t, woken, "woken more than once for one commit")
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

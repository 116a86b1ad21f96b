package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

// refusingStore refuses every checkpoint: every lease was lost.
type refusingStore struct{ store.Store }

func (refusingStore) Checkpoint(ctx context.Context, states []store.DomainState, _ []store.DeadLetter) error {
	lost := make([]string, len(states))
	for i, s := range states {
		lost[i] = s.Domain
	}
	return store.CheckpointRefused(lost, nil)
}

func TestLostDomainIsNotLeftBeingSaved(t *testing.T) {
	t.Parallel()
	q, err := New(refusingStore{newMemory()}, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := store.DomainState{Domain: "a.example", Status: store.StatusActive, LeaseToken: 1}
	w := newWorker(q, ctx, st, time.Now().Add(time.Minute), q.domainLimit(st.Domain))
	st.Cursor = 5
	q.checkpoints.offer(w, st, []store.DeadLetter{{ActivityID: 5, Domain: "a.example", Reason: "422"}}, 1)
	require.True(t, q.checkpoints.unsaved("a.example"))
	require.NoError(t, q.checkpoints.save(ctx), "a lost lease is no error of the save")
	require.False(t, q.checkpoints.unsaved("a.example"), "nothing of the lost domain is left being saved")
	require.Empty(t, q.checkpoints.unsavedDeadLetters(5, nil, true))
	require.Error(t, w.ctx.Err(), "its worker was dropped")
}

package queue

import (
	"context"
	"sync/atomic"
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

// hangingCheckpoints makes the next `hang` checkpoints wait until their
// context ends (a connection that died without a word).
type hangingCheckpoints struct {
	store.Store
	hang atomic.Int64
}

func (s *hangingCheckpoints) Checkpoint(ctx context.Context, states []store.DomainState, dls []store.DeadLetter) error {
	if s.hang.Add(-1) >= 0 {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.Store.Checkpoint(ctx, states, dls)
}

// TestACheckpointThatNeverAnswersEnds makes the first checkpoint after a
// delivery wait forever: it must end with Config.StoreTimeout, and a
// later one save the domain's cursor.
func TestACheckpointThatNeverAnswersEnds(t *testing.T) {
	t.Parallel()
	st := &hangingCheckpoints{Store: newMemory()}
	q, _ := startWithADomain(t, st)

	st.hang.Store(1)
	ids := enqueueAll(t, q, note(1, "https://a.example/inbox"))
	eventually(t, func() bool { return domainState(t, st, "a.example").Cursor == ids[0] },
		"the cursor was not saved after a checkpoint that never answered")
	require.Negative(t, st.hang.Load(), "no checkpoint hung")
}

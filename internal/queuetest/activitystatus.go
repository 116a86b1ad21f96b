package queuetest

import (
	"context"
	"maps"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

// ActivityStatusFromAnotherProcess checks that a process that works none
// of an activity's domains tells from the store where the activity stands
// on each of them, as the process that works them tells from its workers:
// delivered, dead-lettered with the reason, pending with its attempts and
// last error, paused, dead.
func ActivityStatusFromAnotherProcess(t *testing.T, newStore func(*testing.T) store.Store) {
	st := newStore(t)
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		switch d.Domain {
		case "refusing.example":
			return sender.Result{Outcome: sender.Permanent, Status: 422, Reason: "422 Unprocessable Entity"}
		case "failing.example":
			return sender.Result{Outcome: sender.Retry, Status: 500, Reason: "500 Internal Server Error"}
		case "dead.example":
			return sender.Result{Outcome: sender.DomainGone, Status: http.StatusGone, Reason: "410 Gone"}
		}
		return sender.Success(202)
	}}
	cfg := Config("owner")
	cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour // the failing delivery waits
	other, err := queue.New(st, fake, Config("other"))    // never started: it works no domain
	require.NoError(t, err)
	ctx := t.Context()
	require.NoError(t, other.SetSharedInbox(ctx, "https://dead.example/inbox"))
	require.NoError(t, other.AddDomains(ctx, "paused.example"))
	// Paused before any owner works it: a pause from another process
	// reaches the owner only at its next lease renewal.
	require.NoError(t, other.Pause(ctx, "paused.example"))
	owner := Start(t, st, fake, cfg)
	id, err := owner.Enqueue(ctx, Note(1, "https://ok.example/inbox", "https://refusing.example/inbox",
		"https://failing.example/inbox", "https://paused.example/inbox", "https://dead.example/inbox"))
	require.NoError(t, err)

	want := map[string]queue.DeliveryState{
		"ok.example": queue.DeliveryDelivered, "refusing.example": queue.DeliveryDeadLettered,
		"failing.example": queue.DeliveryPending, "paused.example": queue.DeliveryPaused, "dead.example": queue.DeliveryDomainDead,
	}
	states := func(s queue.ActivityStatus) map[string]queue.DeliveryState {
		out := make(map[string]queue.DeliveryState)
		for _, d := range s.Domains {
			out[d.Domain] = d.State
		}
		return out
	}
	var fromStore queue.ActivityStatus
	ok := assert.Eventually(t, func() bool {
		fromStore, err = other.ActivityStatus(ctx, id)
		require.NoError(t, err)
		if !maps.Equal(want, states(fromStore)) {
			return false
		}
		failing := fromStore.Domains[1] // sorted: dead, failing, ok, paused, refusing
		return failing.Attempts == 1 && failing.LastError != "" && len(fromStore.Domains[4].DeadLetters) == 1
	}, waitFor, tick, "the other process reads every state from the store")
	require.True(t, ok, "last read: %+v", fromStore)
	live, err := owner.ActivityStatus(ctx, id)
	require.NoError(t, err)
	require.Equal(t, want, states(live), "the owner tells the same from its workers")
	for i, d := range fromStore.Domains {
		require.False(t, d.Live, d.Domain)
		require.True(t, live.Domains[i].Live, d.Domain)
		switch d.Domain {
		case "refusing.example":
			require.Equal(t, "422 Unprocessable Entity", d.Reason)
			require.Len(t, d.DeadLetters, 1)
			require.Positive(t, d.DeadLetters[0].ID)
			require.Equal(t, d.DeadLetters, live.Domains[i].DeadLetters)
		case "failing.example":
			require.Equal(t, "500 Internal Server Error", d.LastError)
			require.WithinDuration(t, time.Now().Add(time.Hour), d.NextAttemptAt, 10*time.Minute)
			require.Equal(t, d.Attempts, live.Domains[i].Attempts)
		}
	}
}

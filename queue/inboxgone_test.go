package queue

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
	"github.com/apqueue/apqueue/store"
)

func TestGonePersonalInboxIsDeadLetteredWithoutHurtingTheDomain(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/users/deleted/inbox":
			w.WriteHeader(http.StatusGone)
		case "/users/missing/inbox":
			w.WriteHeader(http.StatusNotFound)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer srv.Close()
	deleted, missing, bob := srv.URL+"/users/deleted/inbox", srv.URL+"/users/missing/inbox", srv.URL+"/users/bob/inbox"
	dom := strings.TrimPrefix(srv.URL, "http://")

	cfg, _ := signingSetup(t)
	cfg.DomainBackoffAfter = 1 // one failure counted against the domain would back it off
	log := &eventLog{}
	cfg.Observer = log
	st := newMemory()
	q := startQueue(t, st, nil, cfg) // the HTTP sender classifies the answers
	ids := enqueueAll(t, q, note(1, deleted, bob, missing), note(2, bob), note(3, missing, bob))
	eventually(t, func() bool { return domainState(t, st, dom).Cursor == ids[2] }, "everything settled")
	require.NoError(t, q.Stop(context.Background()), "stop, so that the Observer has seen every event")

	s := domainState(t, st, dom)
	require.Equal(t, store.StatusActive, s.Status)
	require.Zero(t, s.FailCount, "a gone recipient is no failure of the domain")
	require.True(t, s.FailingSince.IsZero())
	require.True(t, s.NextAttemptAt.IsZero(), "no domain backoff")
	require.Empty(t, s.LastError)

	type gone struct {
		inbox string
		id    int64
	}
	want := []gone{{deleted, ids[0]}, {missing, ids[0]}, {missing, ids[2]}}
	var got []gone
	for _, e := range log.of(EventInboxGone) {
		require.Equal(t, dom, e.Domain)
		got = append(got, gone{e.Inbox, e.ActivityID})
	}
	require.ElementsMatch(t, want, got, "one EventInboxGone per gone delivery, naming inbox, domain and activity")

	dls, err := st.DeadLetters(context.Background(), storeFilter(dom))
	require.NoError(t, err)
	got = nil
	for _, dl := range dls {
		require.True(t, strings.HasPrefix(dl.Reason, InboxGoneReason), dl.Reason)
		require.Contains(t, []int{http.StatusGone, http.StatusNotFound}, dl.Status)
		got = append(got, gone{dl.Inbox, dl.ActivityID})
	}
	require.ElementsMatch(t, want, got, "each gone delivery is dead-lettered with the reason")
	require.Len(t, log.of(EventDeadLetter), 3)
	require.Len(t, log.of(EventDelivered), 3, "bob got all three")
	require.Empty(t, log.of(EventRetry))
}

func TestGoneAnswerFromASharedInbox(t *testing.T) {
	t.Parallel()
	// A sender that says InboxGone for a shared inbox is taken to refuse
	// the activity: the shared inbox is no recipient of its own.
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		return sender.Result{Outcome: sender.InboxGone, Status: http.StatusNotFound, Reason: "404 Not Found"}
	}}
	log := &eventLog{}
	cfg := testConfig()
	cfg.Observer = log
	st := newMemory()
	q := startQueue(t, st, fake, cfg)
	require.NoError(t, q.SetSharedInbox(context.Background(), "https://a.example/inbox"))
	ids := enqueueAll(t, q, note(1, "https://a.example/users/bob/inbox"))
	eventually(t, func() bool { return domainState(t, st, "a.example").Cursor == ids[0] }, "settled")
	require.NoError(t, q.Stop(context.Background()))
	require.Empty(t, log.of(EventInboxGone))
	dls, err := st.DeadLetters(context.Background(), storeFilter("a.example"))
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, "404 Not Found", dls[0].Reason)
	require.Equal(t, store.StatusActive, domainState(t, st, "a.example").Status)
}

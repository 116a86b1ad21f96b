package inboxtest_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/internal/leakcheck"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

const (
	actor = "https://local.example/users/alice"
	keyID = actor + "#main-key"
)

var key = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func newSender(t *testing.T, signed bool, cfg *sender.HTTPConfig) *sender.HTTP {
	t.Helper()
	if cfg == nil {
		cfg = &sender.HTTPConfig{}
	}
	cfg.AllowLoopback, cfg.AllowHTTP = true, true
	if signed {
		keys := &signer.StaticKeys{}
		require.NoError(t, keys.Add(actor, keyID, key()))
		s, err := signer.New(keys, nil)
		require.NoError(t, err)
		cfg.Signer = s
	}
	h, err := sender.NewHTTP(cfg)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

func newInbox(t *testing.T, cfg *inboxtest.Config) *inboxtest.Server {
	t.Helper()
	s := inboxtest.New(cfg)
	t.Cleanup(s.Close)
	return s
}

func delivery(inbox string, n int) *sender.Delivery {
	return &sender.Delivery{
		Activity: &sender.Activity{ID: int64(n), Actor: actor, Body: []byte(fmt.Sprintf(`{"id":"https://local.example/activities/%d","type":"Create"}`, n))},
		Inbox:    inbox,
		Attempt:  1,
	}
}

func activityURL(n int) string { return fmt.Sprintf("https://local.example/activities/%d", n) }

func TestVerifiesSignaturesAndRecords(t *testing.T) {
	t.Parallel()
	inbox := newInbox(t, &inboxtest.Config{Keys: map[string]*rsa.PublicKey{keyID: &key().PublicKey}})
	signed := newSender(t, true, nil)

	for i := 1; i <= 3; i++ {
		res := signed.Send(context.Background(), delivery(inbox.SharedInbox(), i))
		require.Equal(t, sender.Delivered, res.Outcome, "%s / %s", res.Reason, inbox.LastRejection())
	}
	res := signed.Send(context.Background(), delivery(inbox.Inbox(), 2)) // a duplicate
	require.Equal(t, sender.Delivered, res.Outcome)

	got := inbox.Received()
	require.Len(t, got, 4)
	require.Equal(t, activityURL(1), got[0].ID)
	require.Equal(t, keyID, got[0].KeyID)
	require.Equal(t, "/inbox", got[0].Path)
	require.Equal(t, "/users/test/inbox", got[3].Path)
	require.JSONEq(t, `{"id":"https://local.example/activities/1","type":"Create"}`, string(got[0].Body))
	require.Equal(t, 2, inbox.Count(activityURL(2)))
	require.Equal(t, 1, inbox.Count(activityURL(3)))
	st := inbox.Stats()
	require.Equal(t, 4, st.Requests)
	require.Equal(t, 4, st.Accepted)
	require.Equal(t, 3, st.Unique)
	require.Equal(t, 1, st.Duplicates)
	require.Zero(t, st.Rejected)
	require.NoError(t, inbox.Wait(context.Background(), 3))
	require.True(t, strings.HasPrefix(inbox.Domain(), "127.0.0.1:"))
}

func TestRejectsUnsignedAndUnknownKeys(t *testing.T) {
	t.Parallel()
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	inbox := newInbox(t, &inboxtest.Config{Keys: map[string]*rsa.PublicKey{keyID: &other.PublicKey}, Schemes: inboxtest.AcceptBoth})

	res := newSender(t, false, nil).Send(context.Background(), delivery(inbox.Inbox(), 1))
	require.Equal(t, http.StatusUnauthorized, res.Status)
	require.Contains(t, inbox.LastRejection(), "Signature")

	res = newSender(t, true, nil).Send(context.Background(), delivery(inbox.Inbox(), 1))
	require.Equal(t, http.StatusUnauthorized, res.Status)
	require.Contains(t, inbox.LastRejection(), "does not verify")
	require.True(t, strings.HasPrefix(res.Reason, "signature rejected: cavage 401, rfc9421 401"), res.Reason)
	require.Equal(t, 2, res.Requests)
	require.Equal(t, 3, inbox.Stats().Rejected)
	require.Empty(t, inbox.Received())

	inbox.AddKey(keyID, &key().PublicKey)
	res = newSender(t, true, nil).Send(context.Background(), delivery(inbox.Inbox(), 1))
	require.Equal(t, sender.Delivered, res.Outcome, inbox.LastRejection())
}

func TestFailFirstRequestsWithRetryAfter(t *testing.T) {
	t.Parallel()
	inbox := newInbox(t, &inboxtest.Config{Failures: inboxtest.Failures{First: 2, Status: http.StatusTooManyRequests, RetryAfter: "7"}})
	h := newSender(t, false, nil)
	d := delivery(inbox.SharedInbox(), 1)
	for attempt := 1; attempt <= 2; attempt++ {
		d.Attempt = attempt
		res := h.Send(context.Background(), d)
		require.Equal(t, sender.Retry, res.Outcome)
		require.Equal(t, http.StatusTooManyRequests, res.Status)
		require.Equal(t, 7*time.Second, res.RetryAfter)
		require.True(t, res.DomainLevel)
	}
	d.Attempt = 3
	require.Equal(t, sender.Delivered, h.Send(context.Background(), d).Outcome)
	st := inbox.Stats()
	require.Equal(t, 2, st.Failed)
	require.Equal(t, 1, st.Accepted)

	inbox.SetFailures(inboxtest.Failures{First: 1, Status: http.StatusGone})
	require.Equal(t, sender.DomainGone, h.Send(context.Background(), &sender.Delivery{Activity: d.Activity, Inbox: inbox.SharedInbox(), SharedInbox: true, Attempt: 1}).Outcome)
}

func TestFailForDuration(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	inbox := newInbox(t, &inboxtest.Config{NowFunc: clock, Failures: inboxtest.Failures{For: time.Minute}})
	h := newSender(t, false, nil)

	res := h.Send(context.Background(), delivery(inbox.Inbox(), 1))
	require.Equal(t, http.StatusServiceUnavailable, res.Status)
	mu.Lock()
	now = now.Add(59 * time.Second)
	mu.Unlock()
	require.Equal(t, http.StatusServiceUnavailable, h.Send(context.Background(), delivery(inbox.Inbox(), 1)).Status)
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	require.Equal(t, sender.Delivered, h.Send(context.Background(), delivery(inbox.Inbox(), 1)).Outcome)
}

func TestLatency(t *testing.T) {
	t.Parallel()
	inbox := newInbox(t, &inboxtest.Config{Latency: time.Hour})
	h := newSender(t, false, &sender.HTTPConfig{RequestTimeout: 50 * time.Millisecond})
	res := h.Send(context.Background(), delivery(inbox.Inbox(), 1))
	require.Equal(t, sender.Retry, res.Outcome)
	require.True(t, strings.HasPrefix(res.Reason, "timeout: "), res.Reason)

	inbox.SetLatency(0)
	// Another sender, with no 50 ms limit a stalled machine could pass.
	require.Equal(t, sender.Delivered, newSender(t, false, nil).Send(context.Background(), delivery(inbox.Inbox(), 1)).Outcome)
}

func TestWaitAndMaxInFlight(t *testing.T) {
	t.Parallel()
	inbox := newInbox(t, &inboxtest.Config{Latency: 50 * time.Millisecond})
	h := newSender(t, false, nil)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.Send(context.Background(), delivery(inbox.Inbox(), i))
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, inbox.Wait(ctx, 4))
	wg.Wait()
	require.GreaterOrEqual(t, inbox.Stats().MaxInFlight, 2)

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, inbox.Wait(ctx, 5), context.Canceled)
}

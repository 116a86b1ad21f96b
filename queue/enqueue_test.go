package queue

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender/sendertest"
)

func TestEnqueueRejectsBadInput(t *testing.T) {
	t.Parallel()
	good := note(1, "https://a.example/inbox")
	tests := []struct {
		name string
		mod  func(a *Activity)
		want error
	}{
		{"body not JSON", func(a *Activity) { a.Body = []byte("hello") }, ErrInvalidBody},
		{"body a JSON array", func(a *Activity) { a.Body = []byte(`[{"actor":"x"}]`) }, ErrInvalidBody},
		{"body a JSON string", func(a *Activity) { a.Body = []byte(`"x"`) }, ErrInvalidBody},
		{"body truncated", func(a *Activity) { a.Body = []byte(`{"actor":"x"`) }, ErrInvalidBody},
		{"empty body", func(a *Activity) { a.Body = nil }, ErrInvalidBody},
		{"missing actor", func(a *Activity) { a.Body = []byte(`{"type":"Create","object":"https://local.example/n/1"}`) }, ErrMissingActor},
		{"empty actor", func(a *Activity) { a.Body = []byte(`{"type":"Create","actor":""}`) }, ErrMissingActor},
		{"actor not an IRI", func(a *Activity) { a.Body = []byte(`{"type":"Create","actor":"alice"}`) }, ErrMissingActor},
		{"actor of another scheme", func(a *Activity) { a.Body = []byte(`{"type":"Create","actor":"acct:alice@local.example"}`) }, ErrMissingActor},
		{"no targets", func(a *Activity) { a.Inboxes = nil }, ErrNoTargets},
		{"relative inbox", func(a *Activity) { a.Inboxes = []string{"/inbox"} }, ErrInvalidInbox},
		{"plain http inbox", func(a *Activity) { a.Inboxes = []string{"http://a.example/inbox"} }, ErrInvalidInbox},
		{"other scheme", func(a *Activity) { a.Inboxes = []string{"ftp://a.example/inbox"} }, ErrInvalidInbox},
		{"user info", func(a *Activity) { a.Inboxes = []string{"https://user:pw@a.example/inbox"} }, ErrInvalidInbox},
		{"fragment", func(a *Activity) { a.Inboxes = []string{"https://a.example/inbox#x"} }, ErrInvalidInbox},
		{"empty fragment", func(a *Activity) { a.Inboxes = []string{"https://a.example/inbox#"} }, ErrInvalidInbox},
		{"no host", func(a *Activity) { a.Inboxes = []string{"https:///inbox"} }, ErrInvalidInbox},
		{"bad host", func(a *Activity) { a.Inboxes = []string{"https://a..example/inbox"} }, ErrInvalidInbox},
		{"unparsable", func(a *Activity) { a.Inboxes = []string{"https://a.example/%zz"} }, ErrInvalidInbox},
		{"audience without resolver", func(a *Activity) { a.Audiences = []string{"https://local.example/users/alice/followers"} }, ErrNoResolver},
		{"body too large", func(a *Activity) {
			a.Body = []byte(`{"actor":"https://local.example/u","content":"` + strings.Repeat("x", 2000) + `"}`)
		}, ErrBodyTooLarge},
	}
	st := newMemory()
	cfg := testConfig()
	cfg.MaxBodyBytes = 1000
	q, err := New(st, &sendertest.Fake{}, cfg)
	require.NoError(t, err)
	ctx := context.Background()
	for _, tt := range tests {
		a := good
		a.Inboxes = append([]string(nil), good.Inboxes...)
		tt.mod(&a)
		// Put the bad activity second in a batch: nothing of it may land.
		_, err := q.EnqueueMany(ctx, []Activity{note(0, "https://b.example/inbox"), a})
		require.ErrorIs(t, err, tt.want, tt.name)
		var ae *ActivityError
		require.True(t, errors.As(err, &ae), tt.name)
		require.Equal(t, 1, ae.Index, tt.name)
		_, err = q.Enqueue(ctx, a)
		require.ErrorIs(t, err, tt.want, tt.name)
	}
	head, err := st.Head(ctx)
	require.NoError(t, err)
	require.Zero(t, head, "a refused batch appends nothing")
	domains, err := st.Domains(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, domains, "a refused batch registers no domain")

	_, err = q.EnqueueMany(ctx, nil)
	require.ErrorIs(t, err, ErrEmptyBatch)
}

func TestEnqueueAllowsHTTPOnlyWhenConfigured(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.AllowHTTP = true
	q, err := New(newMemory(), &sendertest.Fake{}, cfg)
	require.NoError(t, err)
	_, err = q.Enqueue(context.Background(), note(1, "http://127.0.0.1:8080/inbox"))
	require.NoError(t, err)
}

func TestEnqueueNormalisesInboxesAndDomains(t *testing.T) {
	t.Parallel()
	st := newMemory()
	q, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	ctx := context.Background()
	_, err = q.Enqueue(ctx, note(1, "https://A.Example:443/inbox", "https://a.example/inbox", "https://Bücher.example/inbox"))
	require.NoError(t, err)
	acts, err := st.Activities(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, acts, 1)
	require.Equal(t, []string{"https://a.example/inbox", "https://xn--bcher-kva.example/inbox"}, acts[0].Inboxes)
	require.Equal(t, []string{"a.example", "xn--bcher-kva.example"}, acts[0].Domains)
	require.Equal(t, testActor, acts[0].Actor)
	require.Equal(t, "https://local.example/notes/1", acts[0].OrderingKey, "the object is the default ordering key")
}

func TestEnqueueOrderingKeyDefaults(t *testing.T) {
	t.Parallel()
	st := newMemory()
	q, err := New(st, &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	ctx := context.Background()
	in := []string{"https://a.example/inbox"}
	_, err = q.EnqueueMany(ctx, []Activity{
		{Body: []byte(`{"id":"https://l.example/a/1","actor":{"id":"https://l.example/u/1"},"object":{"id":"https://l.example/n/1"}}`), Inboxes: in},
		{Body: []byte(`{"id":"https://l.example/a/2","actor":"https://l.example/u/1"}`), Inboxes: in},
		{Body: []byte(`{"actor":"https://l.example/u/1"}`), Inboxes: in, OrderingKey: "k", Actor: "https://l.example/u/2"},
	})
	require.NoError(t, err)
	acts, err := st.Activities(ctx, 0, 10)
	require.NoError(t, err)
	require.Equal(t, "https://l.example/n/1", acts[0].OrderingKey, "object id from an embedded object")
	require.Equal(t, "https://l.example/u/1", acts[0].Actor, "actor id from an embedded object")
	require.Equal(t, "https://l.example/a/2", acts[1].OrderingKey, "activity id without an object")
	require.Equal(t, "k", acts[2].OrderingKey)
	require.Equal(t, "https://l.example/u/2", acts[2].Actor, "explicit actor wins")
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	bad := []*Config{
		{MaxInFlightPerDomain: -1},
		{BackoffMin: time.Hour, BackoffMax: time.Minute},
		{BackoffJitter: 1.5},
		{MaxAttempts: -2},
		{LeaseTTL: time.Microsecond},
		{ReadBatch: 100, WindowSize: 10},
		{CheckpointInterval: -time.Second},
	}
	for _, cfg := range bad {
		_, err := New(newMemory(), &sendertest.Fake{}, cfg)
		require.Error(t, err, "%+v", cfg)
	}
	_, err := New(nil, &sendertest.Fake{}, nil)
	require.Error(t, err)
	_, err = New(newMemory(), &sendertest.Fake{}, nil)
	require.NoError(t, err, "nil config means defaults")
}

func TestEnqueueTxRefusesNilTransaction(t *testing.T) {
	t.Parallel()
	q, err := New(newMemory(), &sendertest.Fake{}, testConfig())
	require.NoError(t, err)
	err = q.EnqueueTx(context.Background(), nil, note(1, "https://a.example/inbox"))
	require.ErrorIs(t, err, ErrNilTx)
}

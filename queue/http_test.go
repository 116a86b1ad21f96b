package queue

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
)

func TestDefaultSenderSignsOverHTTP(t *testing.T) {
	t.Parallel()
	cfg, icfg := signingSetup(t)
	inbox := inboxtest.New(icfg)
	defer inbox.Close()
	q := startQueue(t, newMemory(), nil, cfg)
	enqueueAll(t, q, note(1, inbox.Inbox()), note(2, inbox.Inbox()))
	require.NoError(t, inbox.Wait(t.Context(), 2), "both signed deliveries verified and accepted: %s", inbox.LastRejection())
	require.Zero(t, inbox.Stats().Rejected)
}

func TestNewWithoutSenderNeedsKeys(t *testing.T) {
	t.Parallel()
	_, err := New(newMemory(), nil, testConfig())
	require.ErrorContains(t, err, "Config.Keys")
}

func TestDefaultSenderRefusesLoopbackUnlessAllowed(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	keys := &signer.StaticKeys{}
	require.NoError(t, keys.Add(testActor, testActor+"#main-key", key))
	inbox := inboxtest.New(nil)
	defer inbox.Close()
	st := newMemory()
	cfg := testConfig()
	cfg.HTTP = &sender.HTTPConfig{AllowHTTP: true}
	cfg.Keys = keys
	q := startQueue(t, st, nil, cfg)
	ids := enqueueAll(t, q, note(1, inbox.Inbox()))
	eventually(t, func() bool {
		dls, err := st.DeadLetters(context.Background(), storeFilter(inbox.Domain()))
		require.NoError(t, err)
		return len(dls) == 1 && dls[0].ActivityID == ids[0]
	}, "a loopback inbox is refused for good by the SSRF guard")
	require.Zero(t, inbox.Stats().Requests)
}

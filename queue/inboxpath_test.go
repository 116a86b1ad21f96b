package queue

import (
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
)

// An inbox path holding both %2F and raw non-ASCII characters reaches the
// inbox given, not the one net/url would make of it
// (/users/a/b%C3%B6b/inbox).
func TestInboxPathWithEscapedSlashAndNonASCII(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	const keyID = testActor + "#main-key"
	keys := &signer.StaticKeys{}
	require.NoError(t, keys.Add(testActor, keyID, key))
	inbox := inboxtest.New(&inboxtest.Config{Keys: map[string]*rsa.PublicKey{keyID: &key.PublicKey}})
	defer inbox.Close()

	cfg := testConfig()
	cfg.AllowHTTP = true
	cfg.Keys = keys
	cfg.HTTP = &sender.HTTPConfig{AllowLoopback: true}
	q := startQueue(t, newMemory(), nil, cfg)
	enqueueAll(t, q, note(1, inbox.URL()+"/users/a%2Fböb/inbox"))
	require.NoError(t, inbox.Wait(t.Context(), 1), inbox.LastRejection())
	got := inbox.Received()
	require.Len(t, got, 1)
	require.Equal(t, "/users/a%2Fb%C3%B6b/inbox", got[0].RequestURI)
	require.Equal(t, "/users/a/böb/inbox", got[0].Path)
}

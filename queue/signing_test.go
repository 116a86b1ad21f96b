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

// signingSetup returns a test config whose default HTTP sender signs for
// testActor with a fresh key and may reach loopback inboxes, and the inbox
// config that verifies those signatures.
func signingSetup(t *testing.T) (*Config, *inboxtest.Config) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	const keyID = testActor + "#main-key"
	keys := &signer.StaticKeys{}
	require.NoError(t, keys.Add(testActor, keyID, key))
	cfg := testConfig()
	cfg.Keys = keys
	cfg.HTTP = &sender.HTTPConfig{AllowLoopback: true, AllowHTTP: true}
	return cfg, &inboxtest.Config{Keys: map[string]*rsa.PublicKey{keyID: &key.PublicKey}}
}

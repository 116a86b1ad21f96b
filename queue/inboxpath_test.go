package queue

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/inboxtest"
)

// An inbox path holding both %2F and raw non-ASCII characters reaches the
// inbox given, not the one net/url would make of it
// (/users/a/b%C3%B6b/inbox).
func TestInboxPathWithEscapedSlashAndNonASCII(t *testing.T) {
	t.Parallel()
	cfg, icfg := signingSetup(t)
	inbox := inboxtest.New(icfg)
	defer inbox.Close()
	q := startQueue(t, newMemory(), nil, cfg)
	enqueueAll(t, q, note(1, inbox.URL()+"/users/a%2Fböb/inbox"))
	require.NoError(t, inbox.Wait(t.Context(), 1), inbox.LastRejection())
	got := inbox.Received()
	require.Len(t, got, 1)
	require.Equal(t, "/users/a%2Fb%C3%B6b/inbox", got[0].RequestURI)
	require.Equal(t, "/users/a/böb/inbox", got[0].Path)
}

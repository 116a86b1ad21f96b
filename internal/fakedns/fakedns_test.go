package fakedns

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// Every name resolves to the configured addresses, through the resolver the
// server hands out.
func TestAnswersEveryName(t *testing.T) {
	t.Parallel()
	s, err := Start([4]byte{127, 0, 0, 1}, [4]byte{127, 0, 0, 2})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	for _, name := range []string{"d00042.instance.test", "mastodon.example"} {
		addrs, err := s.Resolver().LookupHost(context.Background(), name)
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"127.0.0.1", "127.0.0.2"}, addrs, name)
	}
	require.Positive(t, s.Queries())
}

func TestStartNeedsAnAddress(t *testing.T) {
	t.Parallel()
	_, err := Start()
	require.Error(t, err)
}

package memory

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// Pruned activities must not stay reachable through the log's backing array,
// or memory would grow with everything ever enqueued.
func TestPruneReleasesMemory(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := New()
	require.NoError(t, s.RegisterDomains(ctx, []store.DomainRegistration{{Domain: "a.example"}}))
	batch := make([]store.NewActivity, 1000)
	for i := range batch {
		batch[i] = store.NewActivity{Body: make([]byte, 1024), Domains: []string{"a.example"}}
	}
	ids, err := s.Append(ctx, batch)
	require.NoError(t, err)

	held, err := s.AcquireLeases(ctx, "owner", time.Minute, 1)
	require.NoError(t, err)
	held[0].Cursor = ids[989].ID
	require.NoError(t, s.Checkpoint(ctx, held, nil))
	res, err := s.Prune(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 990, res.Deleted)

	s.mu.Lock()
	defer s.mu.Unlock()
	require.Len(t, s.log, 10)
	require.LessOrEqual(t, cap(s.log), 16, "the pruned activities are still referenced")
	require.Equal(t, ids[990].ID, s.log[0].ID)
}

package postgres

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Transactions added one after another put the watcher's next poll off only
// within watchDelayMax of the first one, however closely they follow each
// other; after a poll that starts over.
func TestPollDelayIsBounded(t *testing.T) {
	t.Parallel()
	var p pollDelay
	start := time.Unix(1_700_000_000, 0)
	step := watchIntervalMin / 4
	at := start
	for ; at.Sub(start) < watchDelayMax; at = at.Add(step) {
		require.True(t, p.putOff(at), "added %v after the first", at.Sub(start))
	}
	for range 10 {
		require.False(t, p.putOff(at), "added %v after the first: the poll was put off again", at.Sub(start))
		at = at.Add(step)
	}
	p.polled()
	require.True(t, p.putOff(at), "the first one added after a poll")
}

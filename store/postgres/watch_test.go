package postgres

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Transactions added one after another put the watcher's next poll off
// until watchIntervalMin has passed without one, but only within
// watchDelayMax of the first one, however closely they follow each other;
// after a poll that starts over.
func TestPollDelayIsBounded(t *testing.T) {
	t.Parallel()
	var p pollDelay
	start := time.Unix(1_700_000_000, 0)
	require.Zero(t, p.wait(start), "nothing added: poll now")
	require.False(t, p.added())

	step := watchIntervalMin / 4
	at := start
	for ; at.Add(watchIntervalMin).Before(start.Add(watchDelayMax)); at = at.Add(step) {
		p.add(at)
		require.Equal(t, watchIntervalMin, p.wait(at), "added %v after the first", at.Sub(start))
		require.Equal(t, watchIntervalMin-step, p.wait(at.Add(step)), "a step after adding %v after the first", at.Sub(start))
	}
	for range 10 {
		p.add(at)
		require.Equal(t, max(0, start.Add(watchDelayMax).Sub(at)), p.wait(at), "added %v after the first: the poll was put off past the bound", at.Sub(start))
		at = at.Add(step)
	}
	require.Zero(t, p.wait(start.Add(watchDelayMax)), "at the bound")

	require.True(t, p.added())
	p.polled()
	require.False(t, p.added(), "after a poll")
	p.add(at)
	require.Equal(t, watchIntervalMin, p.wait(at), "the first one added after a poll")
	require.Zero(t, p.wait(at.Add(watchIntervalMin)), "a gap of watchIntervalMin")
}

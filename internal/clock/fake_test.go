package clock

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFakeTimersFireOnAdvance(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	a := f.NewTimer(time.Second)
	b := f.NewTimer(3 * time.Second)
	require.Equal(t, 2, f.Waiters())
	f.Advance(time.Second)
	require.Equal(t, start.Add(time.Second), <-a.C())
	select {
	case <-b.C():
		t.Fatal("timer fired early")
	default:
	}
	require.True(t, b.Stop())
	f.Advance(time.Hour)
	select {
	case <-b.C():
		t.Fatal("stopped timer fired")
	default:
	}
	require.Equal(t, 0, f.Waiters())
	now := f.NewTimer(0)
	require.Equal(t, start.Add(time.Second+time.Hour), <-now.C())
}

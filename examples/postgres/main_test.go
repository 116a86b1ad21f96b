package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/leakcheck"
	"github.com/apqueue/apqueue/internal/pgtest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// TestRun runs the example against the test database, in a schema of its
// own, and checks that only the committed note's activity was delivered.
func TestRun(t *testing.T) {
	db := pgtest.New(t, nil)
	var out strings.Builder
	require.NoError(t, run(t.Context(), db.ConnString, db.Schema+"_ex", false, &out))
	text := out.String()
	t.Log(text)
	require.Contains(t, text, "inbox received https://local.example/notes/1/activity")
	require.Contains(t, text, "inbox received https://local.example/activities/marker")
	require.NotContains(t, text, "inbox received https://local.example/notes/2/activity", "a rolled-back activity was delivered")
	require.Equal(t, 2, strings.Count(text, "inbox received"))
}

package sqlite

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSplitStatements(t *testing.T) {
	t.Parallel()
	got := splitStatements("-- a comment;\nCREATE TABLE a (\n\tx INTEGER -- inline\n);\n\nINSERT INTO a VALUES (1);\nSELECT 1")
	require.Equal(t, []string{"CREATE TABLE a (\n\tx INTEGER -- inline\n);", "INSERT INTO a VALUES (1);", "SELECT 1"}, got)
	ms, err := migrations()
	require.NoError(t, err)
	require.NotEmpty(t, ms)
	for _, m := range ms {
		for _, stmt := range splitStatements(m.SQL) {
			require.NotContains(t, stmt, ";\n", "%s: two statements in one", m.Name)
		}
	}
}

// FuzzSplitStatements checks that splitting never loses or invents a line
// of SQL: every non-blank, non-comment line of the input is in exactly one
// statement, in order, and only the last statement may lack its semicolon.
func FuzzSplitStatements(f *testing.F) {
	f.Add("CREATE TABLE a (x INTEGER);\nINSERT INTO a VALUES (1);\n")
	f.Add("-- c\n\nSELECT 1;\nSELECT 2")
	f.Fuzz(func(t *testing.T, file string) {
		stmts := splitStatements(file)
		var want []string
		for line := range strings.Lines(file) {
			if tr := strings.TrimSpace(line); tr != "" && !strings.HasPrefix(tr, "--") {
				want = append(want, tr)
			}
		}
		var got []string
		for i, s := range stmts {
			require.NotEmpty(t, s)
			if i < len(stmts)-1 {
				require.True(t, strings.HasSuffix(s, ";"), "statement %d lacks its semicolon", i)
			}
			for line := range strings.Lines(s) {
				if tr := strings.TrimSpace(line); tr != "" {
					got = append(got, tr)
				}
			}
		}
		require.Equal(t, want, got)
	})
}

// FuzzAtLeast checks the version comparison against its definition.
func FuzzAtLeast(f *testing.F) {
	f.Add(3, 35, 0)
	f.Add(3, 34, 9)
	f.Fuzz(func(t *testing.T, a, b, c int) {
		if a < 0 || b < 0 || c < 0 {
			return
		}
		v := fmt.Sprintf("%d.%d.%d", a, b, c)
		want := a > minVersion[0] || a == minVersion[0] && (b > minVersion[1] || b == minVersion[1] && c >= minVersion[2])
		require.Equal(t, want, atLeast(v, minVersion), v)
	})
}

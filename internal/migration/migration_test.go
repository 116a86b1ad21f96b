package migration

import (
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

func TestLoadOrdersByVersion(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"m/0010_later.sql": {Data: []byte("B")},
		"m/0002_first.sql": {Data: []byte("A")},
	}
	files, err := Load(fsys, "m")
	require.NoError(t, err)
	require.Equal(t, []File{{Version: 2, Name: "0002_first.sql", SQL: "A"}, {Version: 10, Name: "0010_later.sql", SQL: "B"}}, files)
	require.Equal(t, 10, Latest(files))
	require.Zero(t, Latest(nil))
}

func TestLoadRefusesBadNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"init.sql", "0000_zero.sql", "x1_bad.sql"} {
		_, err := Load(fstest.MapFS{"m/" + name: {Data: []byte("")}}, "m")
		require.ErrorContains(t, err, name)
	}
}

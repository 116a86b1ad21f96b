// Package migration reads the versioned SQL files that the database stores
// embed: one file per version, named NNNN_what.sql, applied in version
// order. It is not part of the API.
package migration

import (
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
)

// File is one versioned SQL file.
type File struct {
	Version int
	Name    string
	SQL     string
}

// Load returns the files of dir in fsys in version order. A file whose
// name does not start with a positive version and '_' is an error.
func Load(fsys fs.FS, dir string) ([]File, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var out []File
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive version and '_'", name)
		}
		body, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, err
		}
		out = append(out, File{Version: v, Name: name, SQL: string(body)})
	}
	slices.SortFunc(out, func(a, b File) int { return a.Version - b.Version })
	return out, nil
}

// Latest returns the highest version among files, 0 when there are none.
func Latest(files []File) int {
	if len(files) == 0 {
		return 0
	}
	return files[len(files)-1].Version
}

package pgtest

import "testing"

// SetPgBouncerPaths replaces the places PgBouncer looks for the binary
// besides PATH, for tests, and returns a function that restores them.
func SetPgBouncerPaths(paths []string) (restore func()) {
	old := pgBouncerPaths
	pgBouncerPaths = paths
	return func() { pgBouncerPaths = old }
}

// SetPickPort replaces how PgBouncer picks its port, for tests, and returns
// a function that restores it.
func SetPickPort(pick func(testing.TB) int) (restore func()) {
	old := pickPort
	pickPort = pick
	return func() { pickPort = old }
}

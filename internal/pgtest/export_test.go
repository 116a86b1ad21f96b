package pgtest

// SetPgBouncerPaths replaces the places PgBouncer looks for the binary
// besides PATH, for tests, and returns a function that restores them.
func SetPgBouncerPaths(paths []string) (restore func()) {
	old := pgBouncerPaths
	pgBouncerPaths = paths
	return func() { pgBouncerPaths = old }
}

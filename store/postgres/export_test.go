package postgres

import "time"

// SetListenPing shortens s's listener health check, for tests. Call it
// before Listen.
func SetListenPing(s *Store, interval, timeout time.Duration) {
	s.pingInterval, s.pingTimeout = interval, timeout
}

// MigrationCount is the number of embedded migrations: LatestVersion when
// their versions have no gaps, fewer when they do.
func MigrationCount() int {
	ms, err := migrations()
	if err != nil {
		panic(err)
	}
	return len(ms)
}

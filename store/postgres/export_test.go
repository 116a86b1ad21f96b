package postgres

import "time"

// SetListenPing shortens s's listener health check, for tests. Call it
// before Listen.
func SetListenPing(s *Store, interval, timeout time.Duration) {
	s.pingInterval, s.pingTimeout = interval, timeout
}

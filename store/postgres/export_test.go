package postgres

import (
	"context"
	"time"
)

// SetListenPing shortens s's listener health check, for tests. Call it
// before Listen.
func SetListenPing(s *Store, interval, timeout time.Duration) {
	s.pingInterval, s.pingTimeout = interval, timeout
}

// MigrateTo applies s's migrations up to version, for upgrade tests.
func MigrateTo(ctx context.Context, s *Store, version int) (int, error) {
	return s.migrate(ctx, version)
}

// PruneBatch is the most rows one maintenance statement deletes.
const PruneBatch = pruneBatch

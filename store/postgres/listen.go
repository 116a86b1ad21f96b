package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/apqueue/apqueue/store"
)

const (
	// listenBackoffMin and listenBackoffMax bound the wait between attempts
	// to reconnect the listener.
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
	// listenHealthy is how long a listening connection must last for the
	// backoff to start over at listenBackoffMin.
	listenHealthy = 30 * time.Second
)

// A listening connection that stays quiet for listenPingInterval is pinged,
// and replaced when the ping fails within listenPingTimeout: a connection
// that died without a word (a NAT entry expiring, a failover without a
// reset) would otherwise leave the queue polling until TCP gives up, which
// takes many minutes. Each Store copies them, so tests can shorten its own.
const (
	listenPingInterval = 30 * time.Second
	listenPingTimeout  = 5 * time.Second
)

// Listen implements store.Store with LISTEN on a dedicated connection (not
// one of the pool's), made from Config.ListenConnString or else from the
// pool's configuration. When the connection is lost (the server restarted,
// the network dropped, the backend was terminated) Listen logs it,
// reconnects with capped exponential backoff and jitter. It calls notify
// each time it starts listening, the first time included, since appends
// made before were not notified.
// A connection quiet for 30 s is pinged, so one that died silently is
// replaced within seconds rather than when TCP gives up.
// It returns ctx.Err() when ctx ends, or store.ErrNotifyUnsupported at once
// with Config.PollOnly.
func (s *Store) Listen(ctx context.Context, notify func()) error {
	if s.pollOnly {
		return store.ErrNotifyUnsupported
	}
	if notify == nil {
		return invalid("listen", "nil notify")
	}
	backoff := listenBackoffMin
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		started := time.Now()
		err := s.listenOnce(ctx, notify, attempt > 0)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if time.Since(started) > listenHealthy {
			backoff = listenBackoffMin
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		s.logger.WarnContext(ctx, "apqueue: postgres listener lost its connection; reconnecting",
			"schema", s.schema, "error", err, "retry_in", wait)
		backoff = min(2*backoff, listenBackoffMax)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// listenOnce connects, listens and forwards notifications until the
// connection fails or ctx ends. It calls notify once it listens.
func (s *Store) listenOnce(ctx context.Context, notify func(), reconnected bool) error {
	conn, err := pgx.ConnectConfig(ctx, s.listenConf.Copy())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	s.count(1)
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if reconnected {
		s.logger.InfoContext(ctx, "apqueue: postgres listener reconnected", "schema", s.schema)
	}
	// Appends committed before LISTEN took effect were not notified to
	// this connection: those made while it reconnected, and at the first
	// connection those made since the caller last read the log's head.
	notify()
	for {
		waitCtx, cancel := context.WithTimeout(ctx, s.pingInterval)
		_, err := conn.WaitForNotification(waitCtx)
		cancel()
		if err == nil {
			// Several appends may have notified at once; the caller
			// coalesces the wake-ups.
			notify()
			continue
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("wait for notification: %w", err)
		}
		// Quiet for a while: check that the connection lives.
		pingCtx, cancel := context.WithTimeout(ctx, s.pingTimeout)
		s.count(1)
		err = conn.Ping(pingCtx)
		cancel()
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			return fmt.Errorf("ping after %v without notifications: %w", s.pingInterval, err)
		}
	}
}

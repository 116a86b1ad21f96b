package main

import (
	"context"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/store"
)

// standalone is a run's backend with one store and a queue on it that
// delivers nothing (its sender is never called), for the scenarios that
// measure enqueueing or idle memory.
type standalone struct {
	be  *backend
	st  store.Store
	snd *sender.HTTP
	q   *queue.Queue
}

// openStandalone opens o's backend, with pools of conns connections (0:
// -db-conns), one store and a queue; close releases them.
func openStandalone(ctx context.Context, o *options, conns int) (*standalone, error) {
	be, err := openBackend(ctx, o, newLogger(o.verbose))
	if err != nil {
		return nil, err
	}
	s := &standalone{be: be}
	if conns > 0 {
		be.conns = conns
	}
	if s.st, err = be.newStore(ctx); err != nil {
		s.close()
		return nil, err
	}
	if s.snd, err = sender.NewHTTP(nil); err != nil {
		s.close()
		return nil, err
	}
	if s.q, err = queue.New(s.st, s.snd, queueConfig(queueSettings{Verbose: o.verbose}, nil, nil)); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *standalone) close() {
	if s.snd != nil {
		s.snd.Close()
	}
	s.be.close()
}

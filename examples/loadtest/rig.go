package main

import (
	"context"
	"log/slog"

	"github.com/apqueue/apqueue/sender"
)

// rig is what a delivery run stands on: the inboxes, the storage and the
// sender every queue and the bare loop share.
type rig struct {
	in     *inboxes
	be     *backend
	snd    *sender.HTTP
	logger *slog.Logger
}

// startRig starts n inboxes configured by icfg, opens the backend o asks
// for, and builds the sender of settings s.
func startRig(ctx context.Context, o *options, n int, icfg inboxConfig, s queueSettings) (*rig, error) {
	r := &rig{logger: newLogger(o.verbose)}
	var err error
	if r.in, err = startInboxes(n, icfg); err != nil {
		return nil, err
	}
	if r.be, err = openBackend(ctx, o, r.logger); err != nil {
		r.close()
		return nil, err
	}
	if r.snd, err = newSender(s, sender.HTTPConfig{}); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// close closes the sender, the backend and the inboxes.
func (r *rig) close() {
	if r.snd != nil {
		r.snd.Close()
	}
	if r.be != nil {
		r.be.close()
	}
	r.in.close()
}

// Command metrics shows how to watch apqueue in production: it mounts the
// queue's status page, serves Prometheus text metrics built from
// Queue.Stats and an Observer, and publishes the stats with expvar — all
// without apqueue depending on a metrics library.
//
//	go run ./examples/metrics -addr 127.0.0.1:8080 -duration 30s
//	curl http://127.0.0.1:8080/metrics
//	open http://127.0.0.1:8080/status
//
// It delivers to local test inboxes (one failing) so that there is
// something to see.
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"expvar"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/apqueue/apqueue/examples/internal/promtext"
	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
	"github.com/apqueue/apqueue/store/memory"
)

const actor = "https://local.example/users/alice"

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve /status, /metrics and /debug/vars on")
	duration := flag.Duration("duration", 30*time.Second, "how long to run (0: until interrupted)")
	flag.Parse()
	if err := run(*addr, *duration); err != nil {
		log.Fatal(err)
	}
}

func run(addr string, duration time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	keys := &signer.StaticKeys{}
	if err := keys.Add(actor, actor+"#main-key", key); err != nil {
		return err
	}
	ok := inboxtest.New(nil)
	defer ok.Close()
	failing := inboxtest.New(&inboxtest.Config{Failures: inboxtest.Failures{For: time.Hour, Status: 503}})
	defer failing.Close()

	events := promtext.NewCounters()
	q, err := queue.New(memory.New(), nil, &queue.Config{
		Keys:     keys,
		HTTP:     &sender.HTTPConfig{AllowLoopback: true, AllowHTTP: true},
		Observer: events,
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	if err := q.Start(ctx); err != nil {
		return err
	}
	defer q.Stop(context.Background())

	expvar.Publish("apqueue", expvar.Func(func() any {
		st, err := q.Stats(context.Background())
		if err != nil {
			return err.Error()
		}
		return st
	}))
	mux := http.NewServeMux()
	mux.Handle("/status", q.StatusHandler()) // mount behind your own auth in production
	mux.Handle("/debug/vars", expvar.Handler())
	mux.Handle("/metrics", promtext.Handler(q, events))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	fmt.Printf("serving http://%s/status, /metrics and /debug/vars\n", ln.Addr())

	ticker := time.NewTicker(500 * time.Millisecond)
	defer ticker.Stop()
	for n := 0; ; n++ {
		body := fmt.Appendf(nil, `{"id":"https://local.example/activities/%d","type":"Create","actor":%q,"object":"https://local.example/notes/%d"}`, n, actor, n)
		if _, err := q.Enqueue(ctx, queue.Activity{Body: body, Inboxes: []string{ok.Inbox(), failing.Inbox()}}); err != nil && ctx.Err() == nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

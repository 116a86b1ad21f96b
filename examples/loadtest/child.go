package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/apqueue/apqueue/queue"
)

// With -worker-mode exec, each worker is this program re-executed with the
// hidden -child flag: a separate process that shares only the PostgreSQL
// schema (through the latency proxy, when there is one) or the SQLite file
// with the parent,
// which enqueues and runs the inboxes. The child reads its configuration
// from an environment variable, reports its statement count and memory on
// stdout as JSON lines every 100 ms, and stops gracefully when its stdin
// closes.

const childEnv = "APQUEUE_LOADTEST_CHILD"

// childConfig is what a child needs to run its queue.
type childConfig struct {
	// Store is postgres or sqlite; DBPath the SQLite file.
	Store       string        `json:"store"`
	DBPath      string        `json:"db_path"`
	DatabaseURL string        `json:"database_url"`
	ProxyAddr   string        `json:"proxy_addr"`
	Schema      string        `json:"schema"`
	Conns       int32         `json:"conns"`
	PollOnly    bool          `json:"poll_only"`
	Queue       queueSettings `json:"queue"`
	// Audience maps each domain to its shared inbox, for the resolver of
	// the followers audience.
	Audience map[string]string `json:"audience"`
}

// childStats is one report line of a child.
type childStats struct {
	Statements  int64  `json:"statements"`
	Retries     int64  `json:"retries"`
	DeadLetters int64  `json:"dead_letters"`
	CPU         int64  `json:"cpu_ns"`
	PeakHeap    uint64 `json:"peak_heap_inuse"`
	PeakSys     uint64 `json:"peak_sys"`
}

// childSet is the parent's view of its children.
type childSet struct {
	cmds  []*exec.Cmd
	stdin []io.Closer

	mu     sync.Mutex
	latest []childStats
	wg     sync.WaitGroup
}

func startChildren(ctx context.Context, o *options, be *backend, s queueSettings, audience map[string]string) (*childSet, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cfg, err := json.Marshal(childConfig{Store: be.kind, DBPath: be.sqlitePath, DatabaseURL: be.url, ProxyAddr: be.proxyAddr(), Schema: be.schema, Conns: int32(o.dbConns), PollOnly: o.pollOnly, Queue: s, Audience: audience})
	if err != nil {
		return nil, err
	}
	cs := &childSet{latest: make([]childStats, o.workers)}
	for i := range o.workers {
		cmd := exec.CommandContext(ctx, exe, "-child")
		cmd.Env = append(os.Environ(), childEnv+"="+string(cfg))
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			cs.stop()
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			cs.stop()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			cs.stop()
			return nil, fmt.Errorf("start worker process: %w", err)
		}
		cs.cmds = append(cs.cmds, cmd)
		cs.stdin = append(cs.stdin, stdin)
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var st childStats
				if json.Unmarshal(sc.Bytes(), &st) == nil {
					cs.mu.Lock()
					cs.latest[i] = st
					cs.mu.Unlock()
				}
			}
		}()
	}
	return cs, nil
}

// statements is the children's statement count, as last reported.
func (cs *childSet) statements() int64 {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var n int64
	for _, s := range cs.latest {
		n += s.Statements
	}
	return n
}

// cpu is the children's CPU time, as last reported.
func (cs *childSet) cpu() time.Duration {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var d time.Duration
	for _, s := range cs.latest {
		d += time.Duration(s.CPU)
	}
	return d
}

// events returns the children's retries and dead letters, as last reported.
func (cs *childSet) events() (retries, deadLetters int64) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, s := range cs.latest {
		retries += s.Retries
		deadLetters += s.DeadLetters
	}
	return retries, deadLetters
}

// peaks returns the largest peak heap and Sys of any child.
func (cs *childSet) peaks() (heap, sys uint64) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, s := range cs.latest {
		heap, sys = max(heap, s.PeakHeap), max(sys, s.PeakSys)
	}
	return heap, sys
}

// stop closes the children's stdin, which makes them stop their queues and
// exit, and waits for them.
func (cs *childSet) stop() {
	for _, c := range cs.stdin {
		_ = c.Close()
	}
	cs.stdin = nil
	cs.wg.Wait()
	for _, cmd := range cs.cmds {
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	cs.cmds = nil
}

// runChild is the main of a worker process.
func runChild(ctx context.Context) error {
	var cfg childConfig
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &cfg); err != nil {
		return fmt.Errorf("child: reading %s: %w", childEnv, err)
	}
	// The parent owns the schema or file and the proxy: this backend only
	// connects.
	be := &backend{kind: cfg.Store, sqlitePath: cfg.DBPath, url: cfg.DatabaseURL, schema: cfg.Schema, remoteProxy: cfg.ProxyAddr, conns: int(cfg.Conns), pollOnly: cfg.PollOnly, logger: newLogger(cfg.Queue.Verbose)}
	defer be.close()
	st, err := be.newStore(ctx)
	if err != nil {
		return err
	}
	snd, err := newSender(cfg.Queue)
	if err != nil {
		return err
	}
	defer snd.Close()
	ev := &events{}
	q, err := queue.New(st, snd, queueConfig(cfg.Queue, sharedInboxResolver(cfg.Audience), ev))
	if err != nil {
		return err
	}
	mem := startMemPeak(100 * time.Millisecond)
	if err := q.Start(ctx); err != nil {
		return err
	}
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	out := json.NewEncoder(os.Stdout)
	report := func() error {
		mem.sample()
		mem.mu.Lock()
		s := childStats{Statements: be.statements(), Retries: ev.retries.Load(), DeadLetters: ev.deadLetters.Load(), CPU: int64(cpuTime()), PeakHeap: mem.heapInuse, PeakSys: mem.sys}
		mem.mu.Unlock()
		return out.Encode(s)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if err := report(); err != nil {
				return err
			}
			continue
		case <-eof:
		case <-ctx.Done():
		}
		break
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = q.Stop(stopCtx)
	mem.finish()
	return errors.Join(err, report())
}

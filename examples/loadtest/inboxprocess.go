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
	"time"
)

// The restart scenario measures the heap a queue grows by while it drains
// a backlog, so its inboxes run in another process: in this one, the
// server ends of a thousand connections would count as much as the queue
// (about 17 MiB of bufio buffers and connection state). The inbox process
// is this program re-executed with the hidden -inbox-child flag: it serves
// the virtual domains (see startVirtualInboxes), prints their addresses as
// its first line, then what it received, as JSON lines every 5 ms, and
// exits when its stdin closes.

const inboxChildEnv = "APQUEUE_LOADTEST_INBOXES"

// inboxChildConfig is what the inbox process serves.
type inboxChildConfig struct {
	Domains int `json:"domains"`
	Servers int `json:"servers"`
}

// inboxChildReport is one line of the inbox process after the first.
type inboxChildReport struct {
	Unique     int64 `json:"unique"`
	Duplicates int64 `json:"duplicates"`
	Rejected   int64 `json:"rejected"`
	FirstNS    int64 `json:"first_ns"`
	LastNS     int64 `json:"last_ns"`
}

// startInboxProcess starts n virtual domains on servers loopback servers in
// an inbox process. The inboxes it returns stand for them: their recorder
// holds the counts last reported (unique, duplicates, rejected, the first
// and last delivery times), and close stops the process.
func startInboxProcess(ctx context.Context, n, servers int) (*inboxes, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cfg, err := json.Marshal(inboxChildConfig{Domains: n, Servers: servers})
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, "-inbox-child")
	cmd.Env = append(os.Environ(), inboxChildEnv+"="+string(cfg))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		_ = stdin.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		_ = stdin.Close()
		return nil, fmt.Errorf("start the inbox process: %w", err)
	}
	in := &inboxes{rec: newRecorder(0)}
	done := make(chan struct{})
	in.stop = func() {
		_ = stdin.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(nil, 64<<20) // the first line lists every domain
	if !sc.Scan() {
		_ = stdin.Close()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the inbox process did not start: %w", errors.Join(sc.Err(), io.ErrUnexpectedEOF))
	}
	if err := json.Unmarshal(sc.Bytes(), &in.domains); err != nil || len(in.domains) != n {
		_ = stdin.Close()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the inbox process's domains: %d of %d (%v)", len(in.domains), n, err)
	}
	in.byHost = make(map[string]int, n)
	for i, d := range in.domains {
		in.byHost[d] = i
	}
	go func() {
		defer close(done)
		for sc.Scan() {
			var r inboxChildReport
			if json.Unmarshal(sc.Bytes(), &r) != nil {
				continue
			}
			in.rec.unique.Store(r.Unique)
			in.rec.duplicates.Store(r.Duplicates)
			in.rec.rejected.Store(r.Rejected)
			in.rec.firstNS.Store(r.FirstNS)
			in.rec.lastNS.Store(r.LastNS)
		}
		_ = cmd.Wait()
	}()
	return in, nil
}

// runInboxChild is the main of an inbox process.
func runInboxChild(ctx context.Context) error {
	var cfg inboxChildConfig
	if err := json.Unmarshal([]byte(os.Getenv(inboxChildEnv)), &cfg); err != nil {
		return fmt.Errorf("inbox process: reading %s: %w", inboxChildEnv, err)
	}
	// Both ends of the connections are no longer in one process: the
	// client's share of the limit is the parent's.
	if _, err := raiseFileLimit(uint64(2*cfg.Domains + 4096)); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest inbox process:", err)
	}
	in, err := startVirtualInboxes(cfg.Domains, cfg.Servers, inboxConfig{})
	if err != nil {
		return err
	}
	defer in.close()
	out := bufio.NewWriter(os.Stdout)
	if err := json.NewEncoder(out).Encode(in.domains); err != nil {
		return err
	}
	if err := out.Flush(); err != nil {
		return err
	}
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var last inboxChildReport
	report := func() error {
		r := inboxChildReport{Unique: in.rec.unique.Load(), Duplicates: in.rec.duplicates.Load(), Rejected: in.rec.rejected.Load(), FirstNS: in.rec.firstNS.Load(), LastNS: in.rec.lastNS.Load()}
		if r == last {
			return nil
		}
		last = r
		line, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(os.Stdout, string(line))
		return err
	}
	for {
		if err := report(); err != nil {
			return err
		}
		select {
		case <-tick.C:
		case <-eof:
			// The parent stops reading soon after; what arrived since
			// the last tick may still count.
			return report()
		case <-ctx.Done():
			return nil
		}
	}
}

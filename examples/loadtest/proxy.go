package main

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// latencyProxy is a TCP proxy on loopback that delays every byte by half of
// rtt in each direction, so that a statement's round trip through it takes rtt
// longer: a database rtt away, as ping would say. Bandwidth is not limited and
// the order of bytes is kept.
type latencyProxy struct {
	ln       net.Listener
	upstream string
	oneWay   atomic.Int64 // nanoseconds

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startLatencyProxy(upstream string, rtt time.Duration) (*latencyProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &latencyProxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.setRTT(rtt)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// setRTT changes the added round-trip time for bytes read from now on.
func (p *latencyProxy) setRTT(rtt time.Duration) { p.oneWay.Store(int64(rtt / 2)) }

// addr is where clients connect instead of upstream.
func (p *latencyProxy) addr() string { return p.ln.Addr().String() }

func (p *latencyProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

func (p *latencyProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *latencyProxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

func (p *latencyProxy) serve(client net.Conn) {
	defer client.Close()
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	server, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		return
	}
	defer server.Close()
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	done := make(chan struct{}, 2)
	go func() { p.pipe(server, client); done <- struct{}{} }()
	go func() { p.pipe(client, server); done <- struct{}{} }()
	<-done // one side ended: end both
	client.Close()
	server.Close()
	<-done
}

type chunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst, each chunk held back until oneWay after it was
// read.
func (p *latencyProxy) pipe(dst, src net.Conn) {
	chunks := make(chan chunk, 4096)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{buf[:n], time.Now().Add(time.Duration(p.oneWay.Load()))}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.data); err != nil {
			src.Close()
			for range chunks {
			}
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// close stops accepting and ends every proxied connection.
func (p *latencyProxy) close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

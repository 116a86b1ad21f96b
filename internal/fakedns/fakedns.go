// Package fakedns is a DNS server on loopback that answers every A query
// with fixed addresses, so that tests and the load generator can give an
// HTTP client (through sender.HTTPConfig.Resolver) any number of host names
// that all reach local servers.
//
//	srv, err := fakedns.Start([4]byte{127, 0, 0, 1})
//	if err != nil { ... }
//	defer srv.Close()
//	cfg := &sender.HTTPConfig{Resolver: srv.Resolver(), AllowLoopback: true}
package fakedns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"golang.org/x/net/dns/dnsmessage"
)

// readers is how many goroutines read queries; readBuffer the socket's
// receive buffer asked for.
const (
	readers    = 4
	readBuffer = 4 << 20
)

// Server answers A queries for every name with its addresses, and other
// queries (AAAA included) with no answer, over UDP on loopback.
type Server struct {
	pc      net.PacketConn
	addrs   [][4]byte
	queries atomic.Int64
	wg      sync.WaitGroup
}

// Start listens on a free loopback UDP port and serves until Close.
func Start(addrs ...[4]byte) (*Server, error) {
	if len(addrs) == 0 {
		return nil, errors.New("fakedns: no address to answer with")
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fakedns: listen: %w", err)
	}
	// A burst of lookups (a client dialling thousands of hosts at once)
	// must not overflow the socket's buffer: a dropped query costs the
	// client a timeout of seconds.
	if u, ok := pc.(*net.UDPConn); ok {
		_ = u.SetReadBuffer(readBuffer)
	}
	s := &Server{pc: pc, addrs: addrs}
	for range readers {
		s.wg.Add(1)
		go s.serve()
	}
	return s, nil
}

// Addr is the server's UDP address.
func (s *Server) Addr() string { return s.pc.LocalAddr().String() }

// Queries is how many queries the server has answered.
func (s *Server) Queries() int64 { return s.queries.Load() }

// Resolver returns a pure-Go resolver that sends every query to s.
func (s *Server) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", s.Addr())
	}}
}

// Close stops the server and waits for it.
func (s *Server) Close() error {
	err := s.pc.Close()
	s.wg.Wait()
	return err
}

func (s *Server) serve() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if out, ok := s.answer(buf[:n]); ok {
			s.queries.Add(1)
			_, _ = s.pc.WriteTo(out, from)
		}
	}
}

// answer builds the response to one query message; ok is false for a
// message that is not a query with a question.
func (s *Server) answer(msg []byte) (out []byte, ok bool) {
	var p dnsmessage.Parser
	hdr, err := p.Start(msg)
	if err != nil || hdr.Response {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true})
	_ = b.StartQuestions()
	_ = b.Question(q)
	_ = b.StartAnswers()
	if q.Type == dnsmessage.TypeA {
		for _, a := range s.addrs {
			_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: a})
		}
	}
	out, err = b.Finish()
	return out, err == nil
}

package main

import (
	"crypto"

	"crypto/rsa"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/internal/httpsigverify"
)

// inboxConfig is how the inboxes behave.
type inboxConfig struct {
	latency    time.Duration
	capacity   int // requests worked at once per domain, 503 beyond; 0: no limit
	failRate   float64
	retryAfter string
	// verify, when set, is the public key every request's signature must
	// verify with; requests that do not are answered 401.
	verify *rsa.PublicKey
	// faults, indexed by domain, make some inboxes misbehave (the faults
	// scenario); a nil entry, or none, is a healthy inbox.
	faults []*inboxFault
	// perDomain records each domain's latency and duplicates apart, and
	// counts the activities from saturationFrom on apart from the others.
	perDomain      bool
	saturationFrom int
}

// inboxes are one HTTP server per remote domain, each on its own loopback
// port (the queue keys domains by host:port). They record what they accept
// in a recorder and are deliberately lean (no body kept, a bitset per
// domain), so that what the load generator measures is the queue.
type inboxes struct {
	cfg     inboxConfig
	domains []string // "127.0.0.1:port"
	servers []*http.Server
	rec     *recorder
	// active counts each domain's requests being worked, for capacity.
	active []atomic.Int64
	// byHost maps each domain's Host header to its index when the domains
	// share servers (startVirtualInboxes); nil when each has its own.
	byHost map[string]int
	// bareAccepted counts the bare POST loop's accepted requests, which
	// are told apart by an enqueue time of zero.
	bareAccepted atomic.Int64
	wg           sync.WaitGroup
	// stop, when set, stops the process that serves the domains (see
	// startInboxProcess).
	stop func()
}

func startInboxes(n int, cfg inboxConfig) (*inboxes, error) {
	in := &inboxes{cfg: cfg, rec: newRecorder(n), active: make([]atomic.Int64, n)}
	if cfg.perDomain {
		in.rec.perDomain = make([]domainLag, n)
		in.rec.saturationFrom = cfg.saturationFrom
	}
	for i := range n {
		ln, err := in.listen(in.handler(i))
		if err != nil {
			in.close()
			return nil, fmt.Errorf("inbox %d: %w", i, err)
		}
		in.domains = append(in.domains, ln.Addr().String())
	}
	return in, nil
}

// startVirtualInboxes serves n domains named dNNNNN.instance.test:port
// from only servers loopback servers (domain i on server i mod servers), for
// a sender whose resolver answers every name with 127.0.0.1 (see
// internal/fakedns): a server that knows tens of thousands of domains,
// without a listening socket for each.
func startVirtualInboxes(n, servers int, cfg inboxConfig) (*inboxes, error) {
	in := &inboxes{cfg: cfg, rec: newRecorder(n), byHost: make(map[string]int, n), active: make([]atomic.Int64, n)}
	ports := make([]int, 0, servers)
	for i := range servers {
		ln, err := in.listen(http.HandlerFunc(in.serveVirtual))
		if err != nil {
			in.close()
			return nil, fmt.Errorf("inbox server %d: %w", i, err)
		}
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for i := range n {
		d := fmt.Sprintf("d%05d.instance.test:%d", i, ports[i%servers])
		in.domains = append(in.domains, d)
		in.byHost[d] = i
	}
	return in, nil
}

// listen starts a loopback server with handler h.
func (in *inboxes) listen(h http.Handler) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	// IdleTimeout outlasts the sender's idle connections (90 s), so that
	// the server does not close a kept-alive connection the client is
	// about to reuse (the client would see EOF and retry). Without it,
	// ReadHeaderTimeout would also bound idle connections.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	in.servers = append(in.servers, srv)
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		_ = srv.Serve(ln)
	}()
	return ln, nil
}

// serveVirtual serves the domain the request's Host names.
func (in *inboxes) serveVirtual(w http.ResponseWriter, r *http.Request) {
	dom, ok := in.byHost[r.Host]
	if !ok {
		in.rec.rejected.Add(1)
		http.Error(w, "unknown domain", http.StatusNotFound)
		return
	}
	in.serve(w, r, dom)
}

// inbox is the personal inbox URL on domain i; sharedInbox its shared inbox.
func (in *inboxes) inbox(i int) string       { return "http://" + in.domains[i] + "/users/bob/inbox" }
func (in *inboxes) sharedInbox(i int) string { return "http://" + in.domains[i] + "/inbox" }

func (in *inboxes) close() {
	if in.stop != nil {
		in.stop()
	}
	for _, s := range in.servers {
		_ = s.Close()
	}
	in.wg.Wait()
}

// handler serves domain dom. The bare POST loop's requests (enqueue time
// zero) get the same latency, failures and signature check as the queue's,
// and are counted apart.
func (in *inboxes) handler(dom int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { in.serve(w, r, dom) })
}

// serve answers one request to domain dom.
func (in *inboxes) serve(w http.ResponseWriter, r *http.Request, dom int) {
	arrived := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, 2<<20))
	seq, enqueued, ok := parseMarks(body)
	if err != nil || r.Method != http.MethodPost || !ok {
		in.rec.rejected.Add(1)
		http.Error(w, "not a load test delivery", http.StatusBadRequest)
		return
	}
	bare := enqueued == 0
	if !bare {
		in.rec.requests.Add(1)
	}
	if c := in.cfg.capacity; c > 0 {
		n := in.active[dom].Add(1)
		defer in.active[dom].Add(-1)
		if n > int64(c) {
			if !bare {
				in.rec.failed.Add(1)
			}
			http.Error(w, "over capacity", http.StatusServiceUnavailable)
			return
		}
	}
	if d := in.cfg.latency; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if dom < len(in.cfg.faults) && in.cfg.faults[dom] != nil && !bare {
		if status, retryAfter := in.cfg.faults[dom].answer(seq, arrived, time.Now()); status != 0 {
			in.rec.failed.Add(1)
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			http.Error(w, "scheduled fault", status)
			return
		}
	}
	if in.cfg.failRate > 0 && rand.Float64() < in.cfg.failRate {
		if !bare {
			in.rec.failed.Add(1)
		}
		if in.cfg.retryAfter != "" {
			w.Header().Set("Retry-After", in.cfg.retryAfter)
		}
		http.Error(w, "scheduled failure", http.StatusServiceUnavailable)
		return
	}
	if key := in.cfg.verify; key != nil {
		var err error
		if r.Header.Get("Signature-Input") != "" {
			_, err = httpsigverify.VerifyRFC9421(r, body, func(string) (crypto.PublicKey, error) { return key, nil }, nil)
		} else {
			_, err = httpsigverify.Verify(r, body, func(string) (*rsa.PublicKey, error) { return key, nil }, nil)
		}
		if err != nil {
			in.rec.rejected.Add(1)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
	}
	if bare {
		in.bareAccepted.Add(1)
	} else {
		in.rec.accept(dom, seq, time.Now(), enqueued)
	}
	w.WriteHeader(http.StatusAccepted)
}

// recorder counts accepted deliveries per domain, duplicates, and the
// enqueue-to-delivery latency of every first delivery.
type recorder struct {
	doms    []domainRecord
	latency histogram
	// perDomain, when not nil, has each domain's latency and duplicates.
	perDomain []domainLag
	// saturationFrom, when positive, is the first sequence number of
	// activities enqueued all at once: perDomain counts them apart.
	saturationFrom int

	unique, duplicates         atomic.Int64
	requests, failed, rejected atomic.Int64
	firstNS, lastNS            atomic.Int64 // first and last unique delivery, Unix ns
}

type domainRecord struct {
	mu   sync.Mutex
	seen []uint64 // bit per sequence number
}

// domainLag is what one domain received: enqueue-to-delivery latency of
// first deliveries, their count and the last one's time, and duplicates;
// apart, the count and last time of the activities from saturationFrom on.
type domainLag struct {
	latency               histogram
	delivered, duplicates atomic.Int64
	lastNS                atomic.Int64

	saturated, saturatedLastNS atomic.Int64
}

func newRecorder(n int) *recorder {
	return &recorder{doms: make([]domainRecord, n)}
}

func (r *recorder) accept(dom, seq int, now time.Time, enqueuedNS int64) {
	d := &r.doms[dom]
	w, bit := seq/64, uint64(1)<<(seq%64)
	d.mu.Lock()
	if w >= len(d.seen) {
		d.seen = append(d.seen, make([]uint64, max(w+1, 2*len(d.seen))-len(d.seen))...)
	}
	dup := d.seen[w]&bit != 0
	d.seen[w] |= bit
	d.mu.Unlock()
	var lag *domainLag
	if r.perDomain != nil {
		lag = &r.perDomain[dom]
	}
	if dup {
		r.duplicates.Add(1)
		if lag != nil {
			lag.duplicates.Add(1)
		}
		return
	}
	ns := now.UnixNano()
	r.latency.add(time.Duration(ns - enqueuedNS))
	switch {
	case lag == nil:
	case r.saturationFrom > 0 && seq >= r.saturationFrom:
		lag.saturated.Add(1)
		storeMax(&lag.saturatedLastNS, ns)
	default:
		lag.latency.add(time.Duration(ns - enqueuedNS))
		lag.delivered.Add(1)
		storeMax(&lag.lastNS, ns)
	}
	r.unique.Add(1)
	r.firstNS.CompareAndSwap(0, ns)
	storeMax(&r.lastNS, ns)
}

// storeMax raises a to v if v is larger.
func storeMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// missing returns, for a domain, the sequence numbers below n it has not
// received, at most limit of them.
func (r *recorder) missing(dom, n, limit int) []int {
	d := &r.doms[dom]
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []int
	for seq := 0; seq < n && len(out) < limit; seq++ {
		w := seq / 64
		if w >= len(d.seen) || d.seen[w]&(1<<(seq%64)) == 0 {
			out = append(out, seq)
		}
	}
	return out
}

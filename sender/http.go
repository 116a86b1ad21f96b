package sender

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/apqueue/apqueue/internal/domain"
	"github.com/apqueue/apqueue/signer"
)

// Defaults of HTTPConfig, applied by NewHTTP to zero fields.
const (
	// DialTimeoutDefault bounds establishing a TCP connection.
	DialTimeoutDefault = 5 * time.Second
	// TLSHandshakeTimeoutDefault bounds the TLS handshake.
	TLSHandshakeTimeoutDefault = 10 * time.Second
	// ResponseHeaderTimeoutDefault bounds the wait for response headers
	// after the request is written; inboxes that process synchronously can
	// be slow, so it is generous.
	ResponseHeaderTimeoutDefault = 20 * time.Second
	// RequestTimeoutDefault bounds a whole attempt: dial, TLS, writing the
	// request, and reading the response.
	RequestTimeoutDefault = 30 * time.Second
	// MaxResponseBytesDefault caps how much of a response body is read.
	// Inbox responses carry nothing the queue needs; the body is read (up to
	// the cap) so the connection can be reused, and its start goes into
	// Result.Reason.
	MaxResponseBytesDefault = 64 << 10
	// MaxIdleConnsPerHostDefault is how many idle connections are kept per
	// remote host for reuse, enough for several requests in flight per
	// domain.
	MaxIdleConnsPerHostDefault = 16
	// MaxIdleConnsDefault (0) sets no limit on idle connections across
	// hosts: each host keeps at most MaxIdleConnsPerHost, for
	// IdleConnTimeout. A total limit below the number of requests in flight
	// makes net/http fail requests the receiver already accepted
	// ("putIdleConn: too many idle connections"), which the queue then
	// sends again.
	MaxIdleConnsDefault = 0
	// IdleConnTimeoutDefault is how long an idle connection is kept.
	IdleConnTimeoutDefault = 90 * time.Second
	// UnauthorizedAttemptsDefault is how many attempts of one delivery may
	// end in 401 Unauthorized and still be retried: the receiver may hold a
	// stale copy of the actor's key and refresh it.
	UnauthorizedAttemptsDefault = 3
	// UserAgentDefault is the User-Agent sent unless configured. Servers
	// should set their own, naming their software and URL, as Mastodon does.
	UserAgentDefault = "apqueue (+https://github.com/apqueue/apqueue)"
)

// responseBufferBytes is the read buffer of each HTTP/1.1 connection, half
// net/http's default: an inbox's status line and headers fit, and a longer
// answer is only read in more calls. Every connection keeps its buffer,
// idle ones included, and a server that delivered to 1,000 domains lately
// keeps 1,000 of them: in the load generator's restart scenario (plain
// HTTP/1.1) this saved 3.5 MiB of heap and cost no throughput. HTTP/2
// connections keep net/http's own buffers.
const responseBufferBytes = 2 << 10

// ContentType is the Content-Type of every delivery.
const ContentType = "application/activity+json"

// accept is sent as Accept: any JSON-LD answer will do.
const accept = `application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams"`

// Signer signs a delivery request with a draft-cavage signature: it sets
// Date, Digest, Host and Signature.
// It is called on every attempt with a freshly built request. *signer.Signer
// implements it.
type Signer interface {
	Sign(ctx context.Context, r *http.Request, actor, digest string) error
}

// HTTPConfig configures the HTTP sender. A nil *HTTPConfig means defaults.
type HTTPConfig struct {
	// Signer signs every request with the key of Activity.Actor. A
	// SchemeSigner (such as *signer.Signer) signs with draft-cavage or RFC
	// 9421 as SignaturePolicy and the domain's remembered scheme say; a
	// plain Signer with draft-cavage only. Nil sends unsigned requests,
	// which real servers reject: for tests and benchmarks only. Default:
	// nil.
	Signer Signer
	// Unsigned says that unsigned requests are meant: there is no Signer
	// on purpose. NewHTTP refuses it together with a Signer; the queue's
	// default sender needs it (or a Signer, or queue.Config.Keys), so that
	// a forgotten key source is an error at start rather than requests
	// every server rejects. Default: false.
	Unsigned bool
	// AllowHTTP lets the sender deliver to plain http:// inboxes, for tests
	// and local development; without it such a delivery fails for good
	// without a request. The queue's default sender also accepts plain http
	// inboxes at enqueue when it is set. Default: false, https only.
	AllowHTTP bool
	// SignaturePolicy chooses the signature scheme tried first for a domain
	// whose scheme is unknown, and whether the other is tried when it is
	// refused. Default: CavageFirst.
	SignaturePolicy SignaturePolicy
	// SchemeRecheckInterval is how long a domain's remembered scheme, when
	// it is not the preferred one, is used before the preferred scheme is
	// tried first again. Default: SchemeRecheckIntervalDefault (30 days).
	SchemeRecheckInterval time.Duration
	// KnockOn400 makes a 400 Bad Request, like 401 and 403, a refusal of
	// the signature that is retried at once with the other scheme (some
	// servers answer 400 to a signature they cannot parse). Default: false.
	KnockOn400 bool
	// UserAgent is sent with every request. Default: UserAgentDefault.
	UserAgent string
	// DialTimeout bounds establishing a TCP connection.
	// Default: DialTimeoutDefault (5 s).
	DialTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake.
	// Default: TLSHandshakeTimeoutDefault (10 s).
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers.
	// Default: ResponseHeaderTimeoutDefault (20 s).
	ResponseHeaderTimeout time.Duration
	// RequestTimeout bounds a whole attempt including reading the response.
	// Default: RequestTimeoutDefault (30 s).
	RequestTimeout time.Duration
	// MaxResponseBytes caps how much of a response body is read; the rest
	// is dropped with the connection. Default: MaxResponseBytesDefault
	// (64 KiB).
	MaxResponseBytes int64
	// MaxIdleConnsPerHost is how many idle connections are kept per host.
	// Default: MaxIdleConnsPerHostDefault (16).
	MaxIdleConnsPerHost int
	// MaxIdleConns limits idle connections across all hosts; 0 means no
	// limit. Keep it at or above the requests in flight (the queue's
	// Config.MaxInFlight). Default: MaxIdleConnsDefault (no limit).
	MaxIdleConns int
	// IdleConnTimeout is how long an idle connection is kept.
	// Default: IdleConnTimeoutDefault (90 s).
	IdleConnTimeout time.Duration
	// UnauthorizedAttempts is how many attempts may end in 401 and still be
	// retried (Delivery.Attempt <= UnauthorizedAttempts); later ones are
	// Permanent. Negative makes every 401 Permanent.
	// Default: UnauthorizedAttemptsDefault (3).
	UnauthorizedAttempts int
	// AllowPrefixes are address ranges the SSRF guard lets through although
	// they are loopback, private or otherwise reserved (see CheckAddr), for
	// example a trusted relay on a private network. Default: none.
	AllowPrefixes []netip.Prefix
	// AllowLoopback adds LoopbackPrefixes to AllowPrefixes, for tests and
	// the quick start, whose inboxes listen on loopback. Default: false.
	AllowLoopback bool
	// TLSClientConfig is the TLS configuration, cloned; nil uses the system
	// roots. Default: nil.
	TLSClientConfig *tls.Config
	// Resolver resolves host names. Default: nil, the net package's resolver.
	Resolver *net.Resolver
	// NowFunc is the clock Retry-After dates are measured against.
	// Default: time.Now.
	NowFunc func() time.Time
}

// HTTP is the Sender that POSTs activities to inboxes over HTTP(S). It keeps
// one connection pool for all deliveries, refuses to dial addresses the SSRF
// guard blocks, does not follow redirects (a 3xx is Permanent: a redirected
// POST would reach a host that was never checked as a delivery target, and
// ActivityPub inboxes do not move), and classifies every outcome into a
// Result. It is safe for concurrent use.
//
// HTTP ignores proxy environment variables: the SSRF guard checks the address
// actually dialed, which would be the proxy's.
type HTTP struct {
	cfg       HTTPConfig
	transport *http.Transport
	client    *http.Client
	accepts   sync.Map // domain -> []signer.SignatureSpec, from Accept-Signature
}

var _ Sender = (*HTTP)(nil)

// NewHTTP returns an HTTP sender configured by cfg (nil means defaults).
func NewHTTP(cfg *HTTPConfig) (*HTTP, error) {
	c := HTTPConfig{}
	if cfg != nil {
		c = *cfg
	}
	if err := c.applyDefaults(); err != nil {
		return nil, err
	}
	t := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialerFor(&c).DialContext,
		TLSClientConfig:       c.TLSClientConfig,
		TLSHandshakeTimeout:   c.TLSHandshakeTimeout,
		ResponseHeaderTimeout: c.ResponseHeaderTimeout,
		MaxIdleConns:          c.MaxIdleConns,
		MaxIdleConnsPerHost:   c.MaxIdleConnsPerHost,
		IdleConnTimeout:       c.IdleConnTimeout,
		ForceAttemptHTTP2:     true,
		// Response bodies are discarded; do not ask for compression.
		DisableCompression: true,
		ReadBufferSize:     responseBufferBytes,
	}
	h := &HTTP{cfg: c, transport: t}
	h.client = &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return h, nil
}

func (c *HTTPConfig) applyDefaults() error {
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"DialTimeout", &c.DialTimeout, DialTimeoutDefault},
		{"TLSHandshakeTimeout", &c.TLSHandshakeTimeout, TLSHandshakeTimeoutDefault},
		{"ResponseHeaderTimeout", &c.ResponseHeaderTimeout, ResponseHeaderTimeoutDefault},
		{"RequestTimeout", &c.RequestTimeout, RequestTimeoutDefault},
		{"IdleConnTimeout", &c.IdleConnTimeout, IdleConnTimeoutDefault},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return fmt.Errorf("sender: HTTPConfig.%s is negative (%s)", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.MaxResponseBytes < 0 || c.MaxIdleConnsPerHost < 0 || c.MaxIdleConns < 0 {
		return errors.New("sender: HTTPConfig.MaxResponseBytes, MaxIdleConnsPerHost and MaxIdleConns must not be negative")
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = MaxResponseBytesDefault
	}
	if c.MaxIdleConnsPerHost == 0 {
		c.MaxIdleConnsPerHost = MaxIdleConnsPerHostDefault
	}
	if c.SignaturePolicy < CavageFirst || c.SignaturePolicy > RFC9421Only {
		return fmt.Errorf("sender: HTTPConfig.SignaturePolicy %v is not a policy", c.SignaturePolicy)
	}
	if c.SchemeRecheckInterval < 0 {
		return fmt.Errorf("sender: HTTPConfig.SchemeRecheckInterval is negative (%s)", c.SchemeRecheckInterval)
	}
	if c.SchemeRecheckInterval == 0 {
		c.SchemeRecheckInterval = SchemeRecheckIntervalDefault
	}
	if c.UnauthorizedAttempts == 0 {
		c.UnauthorizedAttempts = UnauthorizedAttemptsDefault
	}
	if c.Unsigned && c.Signer != nil {
		return errors.New("sender: HTTPConfig.Unsigned contradicts HTTPConfig.Signer: give one")
	}
	if c.UserAgent == "" {
		c.UserAgent = UserAgentDefault
	}
	if strings.ContainsAny(c.UserAgent, "\r\n") {
		return errors.New("sender: HTTPConfig.UserAgent contains a line break")
	}
	allow := make([]netip.Prefix, 0, len(c.AllowPrefixes)+len(LoopbackPrefixes))
	for _, p := range c.AllowPrefixes {
		if !p.IsValid() {
			return fmt.Errorf("sender: HTTPConfig.AllowPrefixes holds an invalid prefix %v", p)
		}
		allow = append(allow, p.Masked())
	}
	if c.AllowLoopback {
		allow = append(allow, LoopbackPrefixes...)
	}
	c.AllowPrefixes = allow
	if c.TLSClientConfig != nil {
		c.TLSClientConfig = c.TLSClientConfig.Clone()
	}
	if c.NowFunc == nil {
		c.NowFunc = time.Now
	}
	return nil
}

// Close closes idle connections. In-flight deliveries are not affected;
// cancel their contexts to stop them.
func (h *HTTP) Close() {
	h.transport.CloseIdleConnections()
}

// Send POSTs d.Activity.Body to d.Inbox, signed for d.Activity.Actor, and
// classifies the outcome. It returns when the attempt ends, the request
// timeout expires or ctx ends.
//
// With a SchemeSigner it knocks twice when it must: it signs with the
// domain's remembered scheme (d.Scheme), or with the policy's preferred one
// when that is unknown or due for a re-check, and when the inbox refuses
// the signature (401 or 403, and 400 with KnockOn400) it sends the same
// delivery again at once with the other scheme. A 401 carrying an
// Accept-Signature makes the second request an RFC 9421 signature with the
// components and parameters asked for, and those are used for the domain's
// later RFC 9421 signatures too. Result.Scheme says which scheme was
// accepted.
func (h *HTTP) Send(ctx context.Context, d *Delivery) Result {
	if d == nil || d.Activity == nil {
		return Result{Outcome: Permanent, Reason: "delivery without activity"}
	}
	inbox := domain.EscapeURL(d.Inbox)
	u, err := url.Parse(inbox)
	if err != nil {
		return Result{Outcome: Permanent, Reason: oneLine("invalid inbox URL: " + err.Error())}
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return Result{Outcome: Permanent, Reason: oneLine(fmt.Sprintf("invalid inbox URL %q: want an absolute http(s) URL", d.Inbox))}
	}
	if _, err := domain.Normalize(u.Host, u.Scheme); err != nil {
		return Result{Outcome: Permanent, Reason: oneLine("invalid inbox URL: " + err.Error())}
	}
	if u.Scheme == "http" && !h.cfg.AllowHTTP {
		return Result{Outcome: Permanent, Reason: oneLine(fmt.Sprintf("plain http inbox %q refused: HTTPConfig.AllowHTTP is not set", d.Inbox))}
	}
	if _, ok := h.cfg.Signer.(SchemeSigner); !ok {
		res, _, _ := h.attempt(ctx, d, inbox, "", nil)
		return res
	}
	order, n, checked := h.knocks(d, h.cfg.NowFunc())
	accept, _ := h.accepts.Load(d.Domain)
	acceptSpecs, _ := accept.([]signer.SignatureSpec)
	var (
		refusals []string
		res      Result
		requests int
		last     signer.Scheme // the scheme of the last request sent
	)
	for i := 0; i < n; i++ {
		sc := order[i]
		var (
			askFor  string
			signErr error
		)
		res, askFor, signErr = h.attempt(ctx, d, inbox, sc, &signer.Options{
			Scheme: sc, Digest: d.Activity.Digest(), ContentDigest: d.Activity.ContentDigest(), Accept: acceptSpecs,
		})
		if errors.Is(signErr, signer.ErrCavageEd25519) && i+1 < n {
			continue // an Ed25519 key goes out with RFC 9421 only
		}
		requests += res.Requests
		if res.Requests > 0 {
			last = sc
		}
		if res.Requests == 0 || !h.refused(res.Status) || i+1 == n {
			break
		}
		refusals = append(refusals, fmt.Sprintf("%s %d", sc, res.Status))
		if specs, err := signer.ParseAcceptSignature(askFor); askFor != "" && err == nil {
			// The inbox said how it wants to be signed: RFC 9421 next.
			acceptSpecs = specs
			h.accepts.Store(d.Domain, specs)
			order[i+1] = signer.RFC9421
		}
	}
	res.Requests = requests
	if res.Outcome == Delivered {
		res.Scheme = last
		res.SchemeChecked = checked
	} else if len(refusals) > 0 && h.refused(res.Status) {
		refusals = append(refusals, fmt.Sprintf("%s %d", last, res.Status))
		res.Reason = oneLine("signature rejected: " + strings.Join(refusals, ", ") + trailing(res.Reason))
	}
	return res
}

// trailing returns the part of a classified reason after its status, as
// ": detail", or "".
func trailing(reason string) string {
	if _, detail, ok := strings.Cut(reason, ": "); ok {
		return ": " + detail
	}
	return ""
}

// attempt sends one signed request (scheme "" signs with Signer.Sign, the
// draft-cavage signature of a plain Signer) and returns its classified
// result, the response's Accept-Signature on a 401, and the signing error
// when no request was sent.
func (h *HTTP) attempt(ctx context.Context, d *Delivery, inbox string, scheme signer.Scheme, o *signer.Options) (res Result, askFor string, signErr error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, h.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, inbox, bytes.NewReader(d.Activity.Body))
	if err != nil {
		return Result{Outcome: Permanent, Reason: oneLine("invalid inbox URL: " + err.Error())}, "", nil
	}
	digest := d.Activity.Digest()
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", h.cfg.UserAgent)
	req.Header.Set("Digest", digest)
	switch {
	case scheme != "":
		if err := h.cfg.Signer.(SchemeSigner).SignWith(ctx, req, d.Activity.Actor, o); err != nil {
			return classifySignError(parent, err), "", err
		}
	case h.cfg.Signer != nil:
		if err := h.cfg.Signer.Sign(ctx, req, d.Activity.Actor, digest); err != nil {
			return classifySignError(parent, err), "", err
		}
	}

	resp, err := h.client.Do(req)
	if err != nil {
		res = classifyError(parent, err)
		res.Requests = 1
		return res, "", nil
	}
	defer resp.Body.Close()
	snippet := h.readBody(resp)
	res = classifyResponse(resp, d, snippet, h.cfg.UnauthorizedAttempts, h.cfg.NowFunc())
	res.Requests = 1
	if resp.StatusCode == http.StatusUnauthorized {
		askFor = resp.Header.Get("Accept-Signature")
	}
	return res, askFor, nil
}

// snippetBytes is how much of an error response goes into Result.Reason.
const snippetBytes = 256

// readBody reads the response body up to the cap, so the connection can be
// reused, and returns the start of it for non-2xx responses.
func (h *HTTP) readBody(resp *http.Response) []byte {
	limit := h.cfg.MaxResponseBytes
	var snippet []byte
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		buf := make([]byte, min(limit, snippetBytes))
		n, _ := io.ReadFull(resp.Body, buf)
		snippet = buf[:n]
		limit -= int64(n)
	}
	if limit > 0 {
		_, _ = io.CopyN(io.Discard, resp.Body, limit)
	}
	return snippet
}

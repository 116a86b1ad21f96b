package sender

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/httpsigverify"
	"github.com/apqueue/apqueue/internal/leakcheck"
	"github.com/apqueue/apqueue/internal/refused"
	"github.com/apqueue/apqueue/signer"
)

const (
	testActor = "https://local.example/users/alice"
	testKeyID = testActor + "#main-key"
)

var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func testDelivery(inbox string) *Delivery {
	return &Delivery{
		Activity: &Activity{ID: 1, Actor: testActor, Body: []byte(`{"id":"https://local.example/activities/1","type":"Create"}`)},
		Inbox:    inbox,
		Attempt:  1,
	}
}

func newTestSender(t testing.TB, cfg *HTTPConfig) *HTTP {
	t.Helper()
	if cfg == nil {
		cfg = &HTTPConfig{}
	}
	cfg.AllowLoopback, cfg.AllowHTTP = true, true
	h, err := NewHTTP(cfg)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

func newTestSigner(t testing.TB) *signer.Signer {
	t.Helper()
	keys := &signer.StaticKeys{}
	require.NoError(t, keys.Add(testActor, testKeyID, testKey()))
	s, err := signer.New(keys, nil)
	require.NoError(t, err)
	return s
}

func newServer(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestSendSignedDeliveryVerifies(t *testing.T) {
	t.Parallel()
	type seen struct {
		r    *http.Request
		body []byte
		err  error
	}
	got := make(chan seen, 1)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, err := httpsigverify.Verify(r, body, func(id string) (*rsa.PublicKey, error) {
			if id != testKeyID {
				return nil, fmt.Errorf("unknown key %s", id)
			}
			return &testKey().PublicKey, nil
		}, &httpsigverify.Options{Now: time.Now(), MaxSkew: time.Minute})
		got <- seen{r, body, err}
		w.WriteHeader(http.StatusAccepted)
	})
	h := newTestSender(t, &HTTPConfig{Signer: newTestSigner(t)})
	d := testDelivery(srv.URL + "/users/bob/inbox")

	res := h.Send(context.Background(), d)
	require.Equal(t, Result{Outcome: Delivered, Status: http.StatusAccepted, Scheme: signer.Cavage, SchemeChecked: true, Requests: 1}, res)
	s := <-got
	require.NoError(t, s.err)
	require.Equal(t, d.Activity.Body, s.body)
	require.Equal(t, http.MethodPost, s.r.Method)
	require.Equal(t, "/users/bob/inbox", s.r.RequestURI)
	require.Equal(t, strings.TrimPrefix(srv.URL, "http://"), s.r.Host, "Host carries the port")
	require.Equal(t, ContentType, s.r.Header.Get("Content-Type"))
	require.Equal(t, UserAgentDefault, s.r.Header.Get("User-Agent"))
	require.Contains(t, s.r.Header.Get("Accept"), "application/activity+json")
	require.Equal(t, d.Activity.Digest(), s.r.Header.Get("Digest"))
	require.Contains(t, s.r.Header.Get("Signature"), `algorithm="rsa-sha256"`)
}

func TestSendUnsignedWithCustomUserAgent(t *testing.T) {
	t.Parallel()
	got := make(chan *http.Request, 1)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { got <- r })
	h := newTestSender(t, &HTTPConfig{UserAgent: "myserver/1.0 (+https://my.example)"})
	res := h.Send(context.Background(), testDelivery(srv.URL+"/inbox"))
	require.Equal(t, Delivered, res.Outcome)
	r := <-got
	require.Equal(t, "myserver/1.0 (+https://my.example)", r.Header.Get("User-Agent"))
	require.Empty(t, r.Header.Get("Signature"))
	require.NotEmpty(t, r.Header.Get("Digest"))
}

func TestSendRetrySignsAgain(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var sigs, dates []string
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sigs = append(sigs, r.Header.Get("Signature"))
		dates = append(dates, r.Header.Get("Date"))
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	var calls atomic.Int64
	keys := &signer.StaticKeys{}
	require.NoError(t, keys.Add(testActor, testKeyID, testKey()))
	sg, err := signer.New(keys, &signer.Config{NowFunc: func() time.Time {
		return now.Add(time.Duration(calls.Add(1)) * time.Second)
	}})
	require.NoError(t, err)
	h := newTestSender(t, &HTTPConfig{Signer: sg})
	d := testDelivery(srv.URL + "/inbox")
	for attempt := 1; attempt <= 2; attempt++ {
		d.Attempt = attempt
		require.Equal(t, Retry, h.Send(context.Background(), d).Outcome)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, sigs, 2)
	require.NotEqual(t, dates[0], dates[1])
	require.NotEqual(t, sigs[0], sigs[1])
}

// statusServer answers every request with the status in the path,
// /status/503, and the Retry-After and body given in the query.
func statusServer(t testing.TB) *httptest.Server {
	return newServer(t, func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if err != nil {
			http.Error(w, "bad path", http.StatusTeapot)
			return
		}
		if v := r.URL.Query().Get("retry_after"); v != "" {
			w.Header().Set("Retry-After", v)
		}
		if code >= 300 && code < 400 {
			w.Header().Set("Location", "https://elsewhere.example/inbox")
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, r.URL.Query().Get("body"))
	})
}

func TestClassification(t *testing.T) {
	t.Parallel()
	srv := statusServer(t)
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	h := newTestSender(t, &HTTPConfig{NowFunc: func() time.Time { return now }})

	tests := []struct {
		status      int
		query       string
		shared      bool
		attempt     int
		outcome     Outcome
		domainLevel bool
		retryAfter  time.Duration
		reason      string
	}{
		{status: 200, outcome: Delivered},
		{status: 201, outcome: Delivered},
		{status: 202, outcome: Delivered},
		{status: 204, outcome: Delivered},
		{status: 301, outcome: Permanent, reason: "301 Moved Permanently: redirect to https://elsewhere.example/inbox not followed"},
		{status: 302, outcome: Permanent, reason: "302 Found: redirect to https://elsewhere.example/inbox not followed"},
		{status: 307, outcome: Permanent, reason: "307 Temporary Redirect: redirect to https://elsewhere.example/inbox not followed"},
		{status: 308, outcome: Permanent, reason: "308 Permanent Redirect: redirect to https://elsewhere.example/inbox not followed"},
		{status: 400, query: "body=bad+json", outcome: Permanent, reason: "400 Bad Request: bad json"},
		{status: 401, attempt: 1, outcome: Retry, reason: "401 Unauthorized"},
		{status: 401, attempt: 3, outcome: Retry, reason: "401 Unauthorized"},
		{status: 401, attempt: 4, query: "body=Verification+failed", outcome: Permanent, reason: "401 Unauthorized after 4 attempts: Verification failed"},
		{status: 403, outcome: Permanent, reason: "403 Forbidden"},
		{status: 404, outcome: InboxGone, reason: "404 Not Found"},
		{status: 404, shared: true, outcome: Permanent, reason: "404 Not Found"},
		{status: 405, outcome: Permanent, reason: "405 Method Not Allowed"},
		{status: 408, outcome: Retry, reason: "408 Request Timeout"},
		{status: 410, outcome: InboxGone, reason: "410 Gone"},
		{status: 410, shared: true, outcome: DomainGone, reason: "410 Gone"},
		{status: 413, outcome: Permanent, reason: "413 Request Entity Too Large"},
		{status: 422, outcome: Permanent, reason: "422 Unprocessable Entity"},
		{status: 429, outcome: Retry, domainLevel: true, reason: "429 Too Many Requests"},
		{status: 429, query: "retry_after=120", outcome: Retry, domainLevel: true, retryAfter: 2 * time.Minute, reason: "429 Too Many Requests"},
		{status: 429, query: "retry_after=Mon,+23+Nov+2026+10:05:00+GMT", outcome: Retry, domainLevel: true, retryAfter: 5 * time.Minute, reason: "429 Too Many Requests"},
		{status: 429, query: "retry_after=garbage", outcome: Retry, domainLevel: true, reason: "429 Too Many Requests"},
		{status: 500, query: "body=%0A++oops%0A%0Aat+line+3%0A", outcome: Retry, reason: "500 Internal Server Error: oops at line 3"},
		{status: 501, outcome: Retry, reason: "501 Not Implemented"},
		{status: 502, outcome: Retry, domainLevel: true, reason: "502 Bad Gateway"},
		{status: 503, query: "retry_after=30", outcome: Retry, domainLevel: true, retryAfter: 30 * time.Second, reason: "503 Service Unavailable"},
		{status: 504, outcome: Retry, domainLevel: true, reason: "504 Gateway Timeout"},
		{status: 507, outcome: Retry, reason: "507 Insufficient Storage"},
		{status: 599, outcome: Retry, reason: "599"},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%d?%s/shared=%v/attempt=%d", tt.status, tt.query, tt.shared, tt.attempt)
		t.Run(name, func(t *testing.T) {
			d := testDelivery(srv.URL + "/status/" + strconv.Itoa(tt.status) + "?" + tt.query)
			d.SharedInbox = tt.shared
			if tt.attempt > 0 {
				d.Attempt = tt.attempt
			}
			res := h.Send(context.Background(), d)
			require.Equal(t, Result{
				Outcome:     tt.outcome,
				Status:      tt.status,
				RetryAfter:  tt.retryAfter,
				DomainLevel: tt.domainLevel,
				Reason:      tt.reason,
				Requests:    1,
			}, res)
		})
	}
}

func TestUnauthorizedAttemptsConfig(t *testing.T) {
	t.Parallel()
	srv := statusServer(t)
	h := newTestSender(t, &HTTPConfig{UnauthorizedAttempts: -1})
	d := testDelivery(srv.URL + "/status/401")
	require.Equal(t, Permanent, h.Send(context.Background(), d).Outcome)
}

func TestReasonIsShortSingleLine(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "<html>\n<body>\r\n"+strings.Repeat("é", 1000)+"\x00\xff</body></html>")
	})
	h := newTestSender(t, nil)
	res := h.Send(context.Background(), testDelivery(srv.URL+"/inbox"))
	require.Equal(t, Permanent, res.Outcome)
	require.True(t, strings.HasPrefix(res.Reason, "400 Bad Request: <html> <body> éé"), res.Reason)
	require.LessOrEqual(t, len(res.Reason), maxReason+len("…"))
	require.NotContains(t, res.Reason, "\n")
	require.True(t, strings.HasSuffix(res.Reason, "…"))
}

func TestAnswersLongerThanTheReadBufferAreRead(t *testing.T) {
	t.Parallel()
	// Headers several times the connection's read buffer, one line of
	// them longer than it, before the one the result depends on.
	policy := strings.Repeat("default-src 'none'; ", 3*responseBufferBytes/20)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", policy)
		for i := range 20 {
			w.Header().Set(fmt.Sprintf("X-Filler-%d", i), strings.Repeat("x", 200))
		}
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	h := newTestSender(t, nil)
	res := h.Send(context.Background(), testDelivery(srv.URL+"/inbox"))
	require.Equal(t, Retry, res.Outcome, res.Reason)
	require.Equal(t, http.StatusTooManyRequests, res.Status)
	require.Equal(t, 7*time.Second, res.RetryAfter)
}

func TestInvalidInboxIsPermanent(t *testing.T) {
	t.Parallel()
	h := newTestSender(t, nil)
	for _, inbox := range []string{"", "/inbox", "ftp://remote.example/inbox", "https://user:pw@remote.example/inbox", "https://bad host/inbox", "http://%zz/"} {
		res := h.Send(context.Background(), testDelivery(inbox))
		require.Equal(t, Permanent, res.Outcome, inbox)
		require.Contains(t, res.Reason, "invalid inbox URL", inbox)
	}
	require.Equal(t, Permanent, h.Send(context.Background(), &Delivery{Inbox: "https://remote.example/inbox"}).Outcome)
}

func TestSigningFailures(t *testing.T) {
	t.Parallel()
	srv := statusServer(t)
	inbox := srv.URL + "/status/202"

	h := newTestSender(t, &HTTPConfig{Signer: newTestSigner(t)})
	d := testDelivery(inbox)
	d.Activity.Actor = "https://local.example/users/nobody"
	res := h.Send(context.Background(), d)
	require.Equal(t, Permanent, res.Outcome, "no key for the actor: retrying cannot help")
	require.True(t, strings.HasPrefix(res.Reason, "signing: "), res.Reason)

	flaky, err := signer.New(signer.KeySourceFunc(func(context.Context, string) (signer.Key, error) {
		return signer.Key{}, errors.New("database is down")
	}), nil)
	require.NoError(t, err)
	h = newTestSender(t, &HTTPConfig{Signer: flaky})
	res = h.Send(context.Background(), testDelivery(inbox))
	require.Equal(t, Retry, res.Outcome)
	require.False(t, res.DomainLevel)
	require.Contains(t, res.Reason, "database is down")
}

func TestConnectionErrorsAreDomainLevel(t *testing.T) {
	t.Parallel()
	addr := refused.Addr(t, "127.0.0.1") // a port nobody listens on

	h := newTestSender(t, nil)
	res := h.Send(context.Background(), testDelivery("http://"+addr+"/inbox"))
	require.Equal(t, Retry, res.Outcome)
	require.True(t, res.DomainLevel)
	require.True(t, strings.HasPrefix(res.Reason, "connection: "), res.Reason)

	res = h.Send(context.Background(), testDelivery("http://nonexistent.invalid/inbox"))
	require.Equal(t, Retry, res.Outcome)
	require.True(t, res.DomainLevel)
	require.True(t, strings.HasPrefix(res.Reason, "dns: "), res.Reason)
}

func TestTLSErrorsAreDomainLevel(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	h := newTestSender(t, nil) // does not trust the test certificate
	res := h.Send(context.Background(), testDelivery(srv.URL+"/inbox"))
	require.Equal(t, Retry, res.Outcome)
	require.True(t, res.DomainLevel)
	require.True(t, strings.HasPrefix(res.Reason, "tls: "), res.Reason)

	h = newTestSender(t, &HTTPConfig{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig})
	res = h.Send(context.Background(), testDelivery(srv.URL+"/inbox"))
	require.Equal(t, Delivered, res.Outcome, res.Reason)
}

// silentListener accepts connections and never reads or writes.
func silentListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

func TestTimeouts(t *testing.T) {
	t.Parallel()
	// Handlers read the body first: only then does the server notice the
	// client hanging up and cancel r.Context().
	slowHeaders := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	})
	slowBody := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	silent := silentListener(t)

	tests := []struct {
		name   string
		cfg    HTTPConfig
		inbox  string
		status int
	}{
		{"response headers", HTTPConfig{ResponseHeaderTimeout: 50 * time.Millisecond}, slowHeaders.URL + "/inbox", 0},
		{"whole request", HTTPConfig{RequestTimeout: 100 * time.Millisecond}, slowHeaders.URL + "/inbox", 0},
		{"never answers", HTTPConfig{RequestTimeout: 100 * time.Millisecond}, "http://" + silent + "/inbox", 0},
		{"TLS handshake", HTTPConfig{TLSHandshakeTimeout: 50 * time.Millisecond}, "https://" + silent + "/inbox", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newTestSender(t, &tt.cfg)
			res := h.Send(context.Background(), testDelivery(tt.inbox))
			require.Equal(t, Retry, res.Outcome, res.Reason)
			require.True(t, res.DomainLevel)
			require.Equal(t, tt.status, res.Status)
			require.True(t, strings.HasPrefix(res.Reason, "timeout: "), res.Reason)
		})
	}

	// A body that stalls after the status line: the status decides, and the
	// request timeout ends the read (2 s: the status line must come
	// before it, on a machine that may stall).
	h := newTestSender(t, &HTTPConfig{RequestTimeout: 2 * time.Second})
	res := h.Send(context.Background(), testDelivery(slowBody.URL+"/inbox"))
	require.Equal(t, Retry, res.Outcome)
	require.Equal(t, http.StatusServiceUnavailable, res.Status)
}

func TestCancellation(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		close(started)
		<-r.Context().Done()
	})
	h := newTestSender(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	res := h.Send(ctx, testDelivery(srv.URL+"/inbox"))
	require.Equal(t, Retry, res.Outcome)
	require.False(t, res.DomainLevel, "the queue stopping says nothing about the domain")
	require.True(t, strings.HasPrefix(res.Reason, "canceled: "), res.Reason)
}

// endlessReader yields bytes forever.
type endlessReader struct{}

func (endlessReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func TestEndlessBodyIsCut(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusOK, http.StatusInternalServerError} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			cut := make(chan int64, 1)
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(status)
				n, _ := io.Copy(w, endlessReader{}) // ends when the client hangs up
				cut <- n
			})
			// The request timeout is far away: only the cap can end the read.
			h := newTestSender(t, &HTTPConfig{MaxResponseBytes: 8 << 10, RequestTimeout: time.Minute})
			res := h.Send(context.Background(), testDelivery(srv.URL+"/inbox"))
			require.Equal(t, status, res.Status)
			if status == http.StatusInternalServerError {
				require.True(t, strings.HasPrefix(res.Reason, "500 Internal Server Error: xxxx"), res.Reason)
			}
			n := <-cut
			require.Less(t, n, int64(16<<20), "the server must stop writing soon after the cap")
		})
	}
}

func TestConnectionReuseAndNoLeaks(t *testing.T) {
	var mu sync.Mutex
	newConns, open := 0, 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			newConns++
			open++
		case http.StateClosed, http.StateHijacked:
			open--
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	before := runtime.NumGoroutine()

	h, err := NewHTTP(&HTTPConfig{AllowLoopback: true, AllowHTTP: true, Signer: newTestSigner(t)})
	require.NoError(t, err)
	const sequential = 100
	for i := range sequential {
		d := testDelivery(srv.URL + "/inbox")
		d.Activity.ID = int64(i)
		require.Equal(t, Delivered, h.Send(context.Background(), d).Outcome)
	}
	// Read the counts under the lock, assert without it: a failed require
	// ends the test while srv.Close, in the cleanup, waits for connection
	// goroutines that ConnState would block on the lock, hanging the binary.
	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return newConns, open
	}
	created, _ := counts()
	// net/http drops a connection instead of reusing it when its write
	// goroutine has not reported the request written 50 ms after the
	// response was read (maxWriteWaitBeforeConnReuse): a stalled machine
	// can cost a connection now and then. A sender that does not drain
	// and close the body opens one per delivery.
	require.LessOrEqual(t, created, sequential/10, "sequential deliveries reuse one connection")

	const workers, each = 8, 25
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if res := h.Send(context.Background(), testDelivery(srv.URL+"/inbox")); res.Outcome != Delivered {
					t.Errorf("delivery failed: %s", res.Reason)
				}
			}
		}()
	}
	wg.Wait()
	createdAfter, openNow := counts()
	require.LessOrEqual(t, createdAfter-created, 2*workers, "concurrent deliveries reuse connections")
	require.LessOrEqual(t, openNow, MaxIdleConnsPerHostDefault)

	h.Close()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return open == 0
	}, 5*time.Second, 5*time.Millisecond, "Close closes idle connections")
	var last int
	if !assertEventually(func() bool { last = runtime.NumGoroutine(); return last <= before }) {
		t.Fatalf("goroutines did not return to the level before the deliveries (%d): %d running:\n%s", before, last, strings.Join(leakcheck.Running(), "\n\n"))
	}
}

// assertEventually polls cond for up to 5 s.
func assertEventually(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func TestNewHTTPValidatesConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]*HTTPConfig{
		"negative timeout":   {DialTimeout: -time.Second},
		"negative cap":       {MaxResponseBytes: -1},
		"user agent newline": {UserAgent: "a\r\nX-Evil: 1"},
		"unsigned signer":    {Unsigned: true, Signer: newTestSigner(t)},
	} {
		_, err := NewHTTP(cfg)
		require.Error(t, err, name)
	}
	h, err := NewHTTP(nil)
	require.NoError(t, err)
	require.Equal(t, DialTimeoutDefault, h.cfg.DialTimeout)
	require.Equal(t, TLSHandshakeTimeoutDefault, h.cfg.TLSHandshakeTimeout)
	require.Equal(t, ResponseHeaderTimeoutDefault, h.cfg.ResponseHeaderTimeout)
	require.Equal(t, RequestTimeoutDefault, h.cfg.RequestTimeout)
	require.EqualValues(t, MaxResponseBytesDefault, h.cfg.MaxResponseBytes)
	require.Equal(t, UnauthorizedAttemptsDefault, h.cfg.UnauthorizedAttempts)
	require.Equal(t, UserAgentDefault, h.cfg.UserAgent)
	require.Empty(t, h.cfg.AllowPrefixes)
	h.Close()
}

func TestSignedDeliveryOverHTTP2(t *testing.T) {
	t.Parallel()
	got := make(chan error, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.ProtoMajor != 2 {
			got <- fmt.Errorf("want HTTP/2, got %s", r.Proto)
		} else {
			_, err := httpsigverify.Verify(r, body, func(string) (*rsa.PublicKey, error) { return &testKey().PublicKey, nil }, nil)
			got <- err
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	h := newTestSender(t, &HTTPConfig{Signer: newTestSigner(t), TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig})
	res := h.Send(context.Background(), testDelivery(srv.URL+"/inbox"))
	require.Equal(t, Delivered, res.Outcome, res.Reason)
	require.NoError(t, <-got)
}

// A plain http inbox is refused without a request unless AllowHTTP says
// plain http is meant, so that an https-only deployment cannot send an
// activity in the clear.
func TestPlainHTTPOnlyWhenAllowed(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusAccepted)
	})
	h, err := NewHTTP(&HTTPConfig{AllowLoopback: true})
	require.NoError(t, err)
	defer h.Close()
	res := h.Send(context.Background(), testDelivery(srv.URL+"/inbox"))
	require.Equal(t, Permanent, res.Outcome)
	require.Contains(t, res.Reason, "AllowHTTP")
	require.Zero(t, res.Requests)
	require.Zero(t, hits.Load())

	allowed := newTestSender(t, &HTTPConfig{})
	res = allowed.Send(context.Background(), testDelivery(srv.URL+"/inbox"))
	require.Equal(t, Delivered, res.Outcome, res.Reason)
	require.EqualValues(t, 1, hits.Load())
}

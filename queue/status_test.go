package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/sender/sendertest"
)

// statusQueue runs a queue with a healthy, a failing and a backlogged domain.
func statusQueue(t *testing.T) *Queue {
	t.Helper()
	release := make(chan struct{})
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		switch d.Domain {
		case "broken.example":
			return sender.Result{Outcome: sender.Retry, Status: 503, DomainLevel: true, Reason: "503 Service Unavailable"}
		case "slow.example":
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return sender.Success(202)
	}}
	cfg := testConfig()
	cfg.BackoffMin = time.Minute
	cfg.BackoffMax = time.Hour
	q := startQueue(t, newMemory(), fake, cfg)
	t.Cleanup(func() { close(release) }) // runs before Stop: cleanups run last-in first-out
	var acts []Activity
	for i := range 8 {
		acts = append(acts, note(i, "https://ok.example/inbox", "https://slow.example/inbox", "https://broken.example/inbox"))
	}
	enqueueAll(t, q, acts...)
	eventually(t, func() bool {
		st, err := q.Stats(context.Background())
		require.NoError(t, err)
		return st.Failing == 1 && st.Delivered == 8 && st.InFlight >= 1
	}, "domains settle into their states")
	time.Sleep(10 * time.Millisecond) // let the backlog age, so lag sorts the rows
	return q
}

func TestStatusHandlerJSON(t *testing.T) {
	t.Parallel()
	q := statusQueue(t)
	srv := httptest.NewServer(q.StatusHandler())
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var body struct {
		Head    int64 `json:"head"`
		Failing int   `json:"failing"`
		Domains []struct {
			Domain    string  `json:"domain"`
			Behind    int64   `json:"behind"`
			Lag       float64 `json:"lag_seconds"`
			FailCount int     `json:"fail_count"`
			LastError string  `json:"last_error"`
			Limit     int     `json:"in_flight_limit"`
			LimitMax  int     `json:"in_flight_max"`
			Changes   []struct {
				From, To int
				Reason   string
			} `json:"limit_changes"`
		} `json:"domains"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, int64(8), body.Head)
	require.Equal(t, 1, body.Failing)
	require.Len(t, body.Domains, 3)
	require.Equal(t, "ok.example", body.Domains[2].Domain, "the caught-up domain sorts last")
	require.Zero(t, body.Domains[2].Behind)
	for _, d := range body.Domains[:2] {
		require.Equal(t, int64(8), d.Behind, d.Domain)
		require.Positive(t, d.Lag, d.Domain)
		if d.Domain == "broken.example" {
			require.Equal(t, "503 Service Unavailable", d.LastError)
			require.Positive(t, d.FailCount)
			require.NotEmpty(t, d.Changes, "the limit's changes")
			require.Equal(t, "congestion: 503", d.Changes[0].Reason)
			require.Equal(t, d.Limit, d.Changes[len(d.Changes)-1].To)
		}
	}
	for _, d := range body.Domains {
		require.Equal(t, MaxInFlightPerDomainDefault, d.LimitMax, d.Domain)
		require.Positive(t, d.Limit, d.Domain)
	}

	resp2, err := http.Post(srv.URL, "text/plain", nil)
	require.NoError(t, err)
	resp2.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp2.StatusCode)
}

func TestStatusPageShowsTheInFlightLimit(t *testing.T) {
	t.Parallel()
	q := statusQueue(t)
	rec := httptest.NewRecorder()
	q.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	page := rec.Body.String()
	require.Contains(t, page, "<th>limit</th><th>limit changes</th><th>best</th>")
	require.Regexp(t, `data-domain="broken.example">(?s:.*?)<td class="num limit">\d+ of 64</td>\s*<td class="changes"><span title="[^"]+">4→3 congestion: 503, \d+s ago</span>`, page)
	require.Regexp(t, `data-domain="ok.example">(?s:.*?)<td class="num best">[0-9.]+(µs|ms)</td>`, page)
}

// chromium returns the path of a headless browser, or skips the test unless
// APQUEUE_REQUIRE_CHROMIUM=1 (set by .ci/run, which installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("APQUEUE_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("no chromium found, and APQUEUE_REQUIRE_CHROMIUM=1")
	}
	t.Skip("no chromium found (Debian package chromium); set APQUEUE_REQUIRE_CHROMIUM=1 to fail instead")
	return ""
}

func TestStatusPageInHeadlessChromium(t *testing.T) {
	t.Parallel()
	browser := chromium(t)
	q := statusQueue(t)
	srv := httptest.NewServer(q.StatusHandler())
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--dump-dom", srv.URL)
	out, err := cmd.Output()
	require.NoError(t, err, "chromium: %s", out)
	dom := string(out)

	require.Contains(t, dom, "apqueue federation status")
	rows := regexp.MustCompile(`<tr class="(\w*)" data-domain="([^"]+)">`).FindAllStringSubmatch(dom, -1)
	require.Len(t, rows, 3, "one row per domain")
	var order []string
	classes := map[string]string{}
	for _, r := range rows {
		order = append(order, r[2])
		classes[r[2]] = r[1]
	}
	require.Equal(t, "ok.example", order[2], "sorted by lag: the caught-up domain last")
	require.Equal(t, "failing", classes["broken.example"], "the failing domain is highlighted")
	require.Empty(t, classes["ok.example"])
	require.Contains(t, dom, "503 Service Unavailable", "the cause is on the page")
	require.Regexp(t, `failing <b id="failing">1</b>`, dom)
	require.True(t, strings.Contains(dom, `<b id="head">8</b>`))
}

func TestStatusHandlerLooksUpAnActivity(t *testing.T) {
	t.Parallel()
	fake := &sendertest.Fake{Handler: func(ctx context.Context, d *sender.Delivery) sender.Result {
		if d.Domain == "refusing.example" {
			return sender.Result{Outcome: sender.Permanent, Status: 422, Reason: "422 <b>Unprocessable</b>"}
		}
		return sender.Success(202)
	}}
	q, err := New(newMemory(), fake, testConfig())
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, q.AddDomains(ctx, "paused.example"))
	require.NoError(t, q.Pause(ctx, "paused.example")) // before it has an owner
	require.NoError(t, q.Start(ctx))
	t.Cleanup(func() { _ = q.Stop(context.Background()) })
	ids := enqueueAll(t, q, note(1, "https://ok.example/inbox", "https://refusing.example/inbox", "https://paused.example/inbox"))
	eventually(t, func() bool {
		s, err := q.ActivityStatus(ctx, ids[0])
		require.NoError(t, err)
		return s.Count(DeliveryDelivered) == 1 && s.Count(DeliveryDeadLettered) == 1
	}, "settled where it can be")
	srv := httptest.NewServer(q.StatusHandler())
	defer srv.Close()
	get := func(query, accept string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/?"+query, nil)
		require.NoError(t, err)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var b strings.Builder
		_, err = io.Copy(&b, resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, b.String()
	}

	code, body := get(fmt.Sprintf("activity=%d", ids[0]), "application/json")
	require.Equal(t, http.StatusOK, code)
	var got ActivityStatus
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	require.Equal(t, ids[0], got.ID)
	states := map[string]DeliveryState{}
	for _, d := range got.Domains {
		states[d.Domain] = d.State
	}
	require.Equal(t, map[string]DeliveryState{
		"ok.example": DeliveryDelivered, "refusing.example": DeliveryDeadLettered, "paused.example": DeliveryPaused,
	}, states)

	code, page := get(fmt.Sprintf("activity=%d", ids[0]), "text/html")
	require.Equal(t, http.StatusOK, code)
	rows := regexp.MustCompile(`<tr class="(\w+)" data-domain="([^"]+)">`).FindAllStringSubmatch(page, -1)
	require.Len(t, rows, 3, "one row per addressed domain, and no domain table")
	require.Equal(t, []string{"delivered", "ok.example"}, rows[0][1:])
	require.Equal(t, []string{"paused", "paused.example"}, rows[1][1:])
	require.Equal(t, []string{"dead_lettered", "refusing.example"}, rows[2][1:])
	require.Contains(t, page, "422 &lt;b&gt;Unprocessable&lt;/b&gt;", "the reason is shown, escaped")
	require.Contains(t, page, fmt.Sprintf(`<span id="activity-id">%d</span>`, ids[0]))

	code, page = get(fmt.Sprintf("activity=%d", ids[0]+1), "text/html")
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, page, fmt.Sprintf("no activity %d in the log", ids[0]+1))
	code, body = get("activity=abc", "application/json")
	require.Equal(t, http.StatusBadRequest, code)
	require.JSONEq(t, `{"error":"\"abc\" is not an activity ID"}`, body)

	code, page = get("", "text/html")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, page, `<input name="activity"`, "the domains page has the lookup form")
	require.Contains(t, page, `id="domains-table"`)
}

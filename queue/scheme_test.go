package queue

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
	"github.com/apqueue/apqueue/store"
)

// TestDoubleKnockRememberedPerDomain delivers to an inbox that accepts only
// draft-cavage, one that accepts only RFC 9421 and one that accepts both:
// every activity arrives once, the refused scheme costs one extra request on
// the first delivery to a domain only (the domain is sent one request at a
// time until its scheme is known), and none after a restart on the same
// store, which remembered each domain's scheme.
func TestDoubleKnockRememberedPerDomain(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		policy sender.SignaturePolicy
		extra  map[inboxtest.Schemes]int // extra requests in the first run
		scheme map[inboxtest.Schemes]signer.Scheme
	}{
		{
			sender.CavageFirst,
			map[inboxtest.Schemes]int{inboxtest.AcceptCavage: 0, inboxtest.AcceptRFC9421: 1, inboxtest.AcceptBoth: 0},
			map[inboxtest.Schemes]signer.Scheme{inboxtest.AcceptCavage: signer.Cavage, inboxtest.AcceptRFC9421: signer.RFC9421, inboxtest.AcceptBoth: signer.Cavage},
		},
		{
			sender.RFC9421First,
			map[inboxtest.Schemes]int{inboxtest.AcceptCavage: 1, inboxtest.AcceptRFC9421: 0, inboxtest.AcceptBoth: 0},
			map[inboxtest.Schemes]signer.Scheme{inboxtest.AcceptCavage: signer.Cavage, inboxtest.AcceptRFC9421: signer.RFC9421, inboxtest.AcceptBoth: signer.RFC9421},
		},
	} {
		t.Run(tt.policy.String(), func(t *testing.T) {
			t.Parallel()
			cfg, icfg := signingSetup(t)
			cfg.HTTP.SignaturePolicy = tt.policy
			inboxes := map[inboxtest.Schemes]*inboxtest.Server{}
			for _, sc := range []inboxtest.Schemes{inboxtest.AcceptCavage, inboxtest.AcceptRFC9421, inboxtest.AcceptBoth} {
				c := *icfg
				c.Schemes = sc
				in := inboxtest.New(&c)
				t.Cleanup(in.Close)
				inboxes[sc] = in
			}
			st := newMemory()
			const n = 12
			run := func(first int) *Queue {
				q := startQueue(t, st, nil, cfg)
				var acts []Activity
				for i := first; i < first+n; i++ {
					var to []string
					for _, in := range inboxes {
						to = append(to, in.Inbox())
					}
					acts = append(acts, note(i, to...))
				}
				enqueueAll(t, q, acts...)
				for _, in := range inboxes {
					require.NoError(t, in.Wait(t.Context(), first-1+n), in.LastRejection())
				}
				return q
			}

			q := run(1)
			stats, err := q.Stats(t.Context())
			require.NoError(t, err)
			for sc, in := range inboxes {
				s := in.Stats()
				require.Equal(t, n, s.Unique)
				require.Zero(t, s.Duplicates)
				require.Equal(t, n+tt.extra[sc], s.Requests, "requests to the %v inbox", sc)
				require.Equal(t, tt.extra[sc], s.Rejected)
				for _, d := range stats.Domains {
					if d.Domain == in.Domain() {
						require.Equal(t, string(tt.scheme[sc]), d.SignatureScheme)
					}
				}
			}
			assertStatusShowsSchemes(t, q, inboxes, tt.scheme)
			stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			require.NoError(t, q.Stop(stopCtx))
			for sc, in := range inboxes {
				saved := domainState(t, st, in.Domain())
				require.Equal(t, string(tt.scheme[sc]), saved.SignatureScheme, "saved with the domain")
			}

			// A restart on the same store: no extra request anywhere.
			run(n + 1)
			for sc, in := range inboxes {
				s := in.Stats()
				require.Equal(t, 2*n, s.Unique)
				require.Zero(t, s.Duplicates)
				require.Equal(t, 2*n+tt.extra[sc], s.Requests, "requests to the %v inbox after the restart", sc)
			}
		})
	}
}

func assertStatusShowsSchemes(t *testing.T, q *Queue, inboxes map[inboxtest.Schemes]*inboxtest.Server, want map[inboxtest.Schemes]signer.Scheme) {
	t.Helper()
	rec := httptest.NewRecorder()
	q.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?format=json", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	var out struct {
		Domains []struct {
			Domain          string             `json:"domain"`
			Status          store.DomainStatus `json:"status"`
			SignatureScheme string             `json:"signature_scheme"`
		} `json:"domains"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
	got := map[string]string{}
	for _, d := range out.Domains {
		got[d.Domain] = d.SignatureScheme
	}
	for sc, in := range inboxes {
		require.Equal(t, string(want[sc]), got[in.Domain()])
	}
	rec = httptest.NewRecorder()
	q.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	page := rec.Body.String()
	require.True(t, strings.Contains(page, `<th>signature</th>`) && strings.Contains(page, `<td class="scheme">rfc9421</td>`), page)
}

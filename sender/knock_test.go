package sender

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/signer"
)

// knockServer answers draft-cavage requests with cavageStatus and RFC 9421
// ones with what rfc9421 says, and records the Signature-Input of each.
func knockServer(t *testing.T, cavageStatus int, rfc9421 func(w http.ResponseWriter, input string)) (*[]string, string) {
	var (
		mu   sync.Mutex
		seen []string
	)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		input := r.Header.Get("Signature-Input")
		mu.Lock()
		seen = append(seen, input)
		mu.Unlock()
		if input == "" {
			w.WriteHeader(cavageStatus)
			return
		}
		rfc9421(w, input)
	})
	return &seen, srv.URL + "/inbox"
}

func TestKnockOn400(t *testing.T) {
	t.Parallel()
	accept := func(w http.ResponseWriter, _ string) { w.WriteHeader(http.StatusAccepted) }
	for _, knock := range []bool{false, true} {
		seen, inbox := knockServer(t, http.StatusBadRequest, accept)
		h := newTestSender(t, &HTTPConfig{Signer: newTestSigner(t), KnockOn400: knock})
		res := h.Send(context.Background(), testDelivery(inbox))
		if !knock {
			require.Equal(t, Permanent, res.Outcome, "a 400 is this activity's problem unless KnockOn400")
			require.Len(t, *seen, 1)
			continue
		}
		require.Equal(t, Delivered, res.Outcome)
		require.Equal(t, signer.RFC9421, res.Scheme)
		require.Len(t, *seen, 2)
	}
}

func TestAcceptSignatureAfterAnRFC9421Refusal(t *testing.T) {
	t.Parallel()
	// The inbox wants a tag; it says so on the 401 of the first RFC 9421
	// request, and the second carries it instead of falling back to cavage.
	seen, inbox := knockServer(t, http.StatusAccepted, func(w http.ResponseWriter, input string) {
		if !strings.Contains(input, `;tag="fedi"`) {
			w.Header().Set("Accept-Signature", `sig=("@method" "@target-uri" "content-digest");tag="fedi"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	h := newTestSender(t, &HTTPConfig{Signer: newTestSigner(t), SignaturePolicy: RFC9421First})
	res := h.Send(context.Background(), testDelivery(inbox))
	require.Equal(t, Delivered, res.Outcome)
	require.Equal(t, signer.RFC9421, res.Scheme)
	require.Equal(t, 2, res.Requests)
	require.Len(t, *seen, 2)
	require.True(t, strings.HasPrefix((*seen)[1], "sig="), (*seen)[1])
}

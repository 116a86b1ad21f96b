package inboxtest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/inboxtest"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
)

// TestDoubleKnock sends to inboxes that accept only draft-cavage, only RFC
// 9421, or both, with each policy, and checks which scheme went through
// and how many requests it took.
func TestDoubleKnock(t *testing.T) {
	t.Parallel()
	type want struct {
		scheme   signer.Scheme
		requests int
	}
	tests := []struct {
		inbox   inboxtest.Schemes
		policy  sender.SignaturePolicy
		known   signer.Scheme // the domain's remembered scheme
		checked time.Duration // how long ago it was checked
		want    want
	}{
		{inboxtest.AcceptCavage, sender.CavageFirst, "", 0, want{signer.Cavage, 1}},
		{inboxtest.AcceptRFC9421, sender.CavageFirst, "", 0, want{signer.RFC9421, 2}},
		{inboxtest.AcceptBoth, sender.CavageFirst, "", 0, want{signer.Cavage, 1}},
		{inboxtest.AcceptCavage, sender.RFC9421First, "", 0, want{signer.Cavage, 2}},
		{inboxtest.AcceptRFC9421, sender.RFC9421First, "", 0, want{signer.RFC9421, 1}},
		{inboxtest.AcceptBoth, sender.RFC9421First, "", 0, want{signer.RFC9421, 1}},
		// The remembered scheme goes first: no extra request.
		{inboxtest.AcceptRFC9421, sender.CavageFirst, signer.RFC9421, time.Hour, want{signer.RFC9421, 1}},
		// ... until it is due for a re-check against the preferred one.
		{inboxtest.AcceptRFC9421, sender.CavageFirst, signer.RFC9421, 31 * 24 * time.Hour, want{signer.RFC9421, 2}},
		{inboxtest.AcceptBoth, sender.CavageFirst, signer.RFC9421, 31 * 24 * time.Hour, want{signer.Cavage, 1}},
		// A remembered scheme that is refused now falls back to the other.
		{inboxtest.AcceptCavage, sender.CavageFirst, signer.RFC9421, time.Hour, want{signer.Cavage, 2}},
		// One scheme only: no second knock.
		{inboxtest.AcceptRFC9421, sender.CavageOnly, "", 0, want{"", 1}},
		{inboxtest.AcceptCavage, sender.RFC9421Only, "", 0, want{"", 1}},
		{inboxtest.AcceptRFC9421, sender.RFC9421Only, "", 0, want{signer.RFC9421, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.policy.String()+"/"+string(tt.known), func(t *testing.T) {
			t.Parallel()
			inbox := newInbox(t, &inboxtest.Config{Keys: map[string]*rsa.PublicKey{keyID: &key().PublicKey}, Schemes: tt.inbox})
			h := newSender(t, true, &sender.HTTPConfig{SignaturePolicy: tt.policy})
			d := delivery(inbox.Inbox(), 1)
			d.Scheme, d.SchemeCheckedAt = tt.known, time.Now().Add(-tt.checked)
			res := h.Send(context.Background(), d)
			require.Equal(t, tt.want.requests, res.Requests)
			require.Equal(t, tt.want.requests, inbox.Stats().Requests)
			require.Equal(t, tt.want.scheme, res.Scheme, res.Reason)
			if tt.want.scheme == "" {
				require.Equal(t, http.StatusUnauthorized, res.Status)
				require.Empty(t, inbox.Received())
				return
			}
			require.Equal(t, sender.Delivered, res.Outcome, inbox.LastRejection())
			single := tt.policy == sender.CavageOnly || tt.policy == sender.RFC9421Only
			require.Equal(t, !single && (tt.known == "" || tt.checked > 30*24*time.Hour), res.SchemeChecked)
			got := inbox.Received()
			require.Len(t, got, 1)
			require.Equal(t, string(tt.want.scheme), got[0].Scheme)
			require.Equal(t, keyID, got[0].KeyID)
		})
	}
}

func TestBothRefusedIsOneFailureWithBothStatuses(t *testing.T) {
	t.Parallel()
	inbox := newInbox(t, &inboxtest.Config{Keys: map[string]*rsa.PublicKey{"someone-else": &key().PublicKey}, Schemes: inboxtest.AcceptBoth})
	h := newSender(t, true, &sender.HTTPConfig{KnockOn400: true})
	d := delivery(inbox.Inbox(), 1)
	res := h.Send(context.Background(), d)
	require.Equal(t, sender.Retry, res.Outcome, "a 401 is retried a bounded number of times")
	require.Equal(t, 2, res.Requests)
	require.Empty(t, res.Scheme)
	require.Regexp(t, `^signature rejected: cavage 401, rfc9421 401: `, res.Reason)
	d.Attempt = sender.UnauthorizedAttemptsDefault + 1
	res = h.Send(context.Background(), d)
	require.Equal(t, sender.Permanent, res.Outcome)
	require.Regexp(t, `^signature rejected: cavage 401, rfc9421 401: `, res.Reason)
}

func TestAcceptSignatureIsHonoured(t *testing.T) {
	t.Parallel()
	// An inbox that wants RFC 9421 with a tag, and says so on its 401s.
	inbox := newInbox(t, &inboxtest.Config{
		Keys:            map[string]*rsa.PublicKey{keyID: &key().PublicKey},
		Schemes:         inboxtest.AcceptRFC9421,
		AcceptSignature: `want=("@method" "@authority" "@path" "content-digest");tag="inboxtest";nonce="n1"`,
	})
	h := newSender(t, true, nil)
	res := h.Send(context.Background(), delivery(inbox.Inbox(), 1))
	require.Equal(t, sender.Delivered, res.Outcome, inbox.LastRejection())
	require.Equal(t, signer.RFC9421, res.Scheme)
	require.Equal(t, 2, res.Requests)
	got := inbox.Received()
	require.Len(t, got, 1)
	require.Equal(t, "rfc9421", got[0].Scheme)

	// The domain's later RFC 9421 signatures carry what it asked for.
	d := delivery(inbox.Inbox(), 2)
	d.Scheme, d.SchemeCheckedAt = signer.RFC9421, time.Now()
	res = h.Send(context.Background(), d)
	require.Equal(t, sender.Delivered, res.Outcome)
	require.Equal(t, 1, res.Requests)
}

func TestEd25519KeyGoesWithRFC9421Only(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	const edKeyID = actor + "#ed25519"
	keys := &signer.StaticKeys{}
	require.NoError(t, keys.AddKey(actor, signer.Key{ID: edKeyID, Ed25519: priv}))
	s, err := signer.New(keys, nil)
	require.NoError(t, err)

	for _, tt := range []struct {
		accepts  inboxtest.Schemes
		outcome  sender.Outcome
		requests int
	}{
		{inboxtest.AcceptBoth, sender.Delivered, 1},
		{inboxtest.AcceptRFC9421, sender.Delivered, 1},
		{inboxtest.AcceptCavage, sender.Retry, 1}, // refused, and never a cavage Ed25519 signature
	} {
		inbox := newInbox(t, &inboxtest.Config{Schemes: tt.accepts})
		inbox.AddPublicKey(edKeyID, pub)
		h := newSender(t, false, &sender.HTTPConfig{Signer: s})
		res := h.Send(context.Background(), delivery(inbox.Inbox(), 1))
		require.Equal(t, tt.outcome, res.Outcome, res.Reason)
		require.Equal(t, tt.requests, inbox.Stats().Requests)
		require.Equal(t, tt.requests, res.Requests)
		if tt.outcome == sender.Delivered {
			require.Equal(t, signer.RFC9421, res.Scheme, "the scheme the inbox accepted")
		} else {
			require.Empty(t, res.Scheme)
			require.NotContains(t, res.Reason, "cavage", "no cavage request was made")
		}
		for _, a := range inbox.Received() {
			require.Equal(t, "rfc9421", a.Scheme)
		}
	}
	// With draft-cavage only, an Ed25519 key cannot sign at all.
	inbox := newInbox(t, &inboxtest.Config{Schemes: inboxtest.AcceptBoth})
	inbox.AddPublicKey(edKeyID, pub)
	h := newSender(t, false, &sender.HTTPConfig{Signer: s, SignaturePolicy: sender.CavageOnly})
	res := h.Send(context.Background(), delivery(inbox.Inbox(), 1))
	require.Equal(t, sender.Permanent, res.Outcome)
	require.Contains(t, res.Reason, "Ed25519")
	require.Zero(t, inbox.Stats().Requests)
}

func TestInboxPathWithEscapedSlashAndRawNonASCII(t *testing.T) {
	t.Parallel()
	inbox := newInbox(t, &inboxtest.Config{Keys: map[string]*rsa.PublicKey{keyID: &key().PublicKey}, Schemes: inboxtest.AcceptBoth})
	for _, policy := range []sender.SignaturePolicy{sender.CavageOnly, sender.RFC9421Only} {
		h := newSender(t, true, &sender.HTTPConfig{SignaturePolicy: policy})
		res := h.Send(context.Background(), delivery(inbox.URL()+"/users/a%2Fböb/inbox", 1))
		require.Equal(t, sender.Delivered, res.Outcome, inbox.LastRejection())
	}
	got := inbox.Received()
	require.Len(t, got, 2)
	for _, a := range got {
		require.Equal(t, "/users/a%2Fb%C3%B6b/inbox", a.RequestURI, "the inbox given, %2F kept")
	}
}

func TestSchemeCheckDue(t *testing.T) {
	t.Parallel()
	now := time.Now()
	signed := newSender(t, true, nil)
	require.True(t, signed.SchemeCheckDue("", time.Time{}, now), "unknown: the first delivery knocks")
	require.False(t, signed.SchemeCheckDue(signer.Cavage, time.Time{}, now), "the preferred scheme is never re-checked")
	require.False(t, signed.SchemeCheckDue(signer.RFC9421, now.Add(-time.Hour), now))
	require.True(t, signed.SchemeCheckDue(signer.RFC9421, now.Add(-sender.SchemeRecheckIntervalDefault), now))
	require.False(t, newSender(t, false, nil).SchemeCheckDue("", time.Time{}, now), "unsigned: no knock")
	only := newSender(t, true, &sender.HTTPConfig{SignaturePolicy: sender.RFC9421Only})
	require.False(t, only.SchemeCheckDue("", time.Time{}, now), "one scheme only: no knock")
}

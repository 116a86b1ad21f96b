package sender

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/apqueue/apqueue/signer"
)

// SignaturePolicy says which HTTP signature schemes the HTTP sender uses,
// in which order, for a domain whose accepted scheme is not known (or is
// due for a re-check).
type SignaturePolicy int

const (
	// CavageFirst signs with draft-cavage first and, when the inbox refuses
	// it (401 or 403, and 400 with HTTPConfig.KnockOn400), again at once
	// with RFC 9421: the "double knock", as Mastodon does. The default.
	CavageFirst SignaturePolicy = iota
	// RFC9421First signs with RFC 9421 first and falls back to draft-cavage,
	// as Fedify does.
	RFC9421First
	// CavageOnly signs with draft-cavage only.
	CavageOnly
	// RFC9421Only signs with RFC 9421 only.
	RFC9421Only
)

// String returns the policy's name.
func (p SignaturePolicy) String() string {
	switch p {
	case CavageFirst:
		return "cavage-first"
	case RFC9421First:
		return "rfc9421-first"
	case CavageOnly:
		return "cavage-only"
	case RFC9421Only:
		return "rfc9421-only"
	}
	return fmt.Sprintf("SignaturePolicy(%d)", int(p))
}

// ParseSignaturePolicy returns the policy named by its String.
func ParseSignaturePolicy(s string) (SignaturePolicy, error) {
	for p := CavageFirst; p <= RFC9421Only; p++ {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("sender: unknown signature policy %q (want cavage-first, rfc9421-first, cavage-only or rfc9421-only)", s)
}

// preferred returns the scheme the policy tries first.
func (p SignaturePolicy) preferred() signer.Scheme {
	if p == RFC9421First || p == RFC9421Only {
		return signer.RFC9421
	}
	return signer.Cavage
}

// single reports whether the policy uses one scheme only.
func (p SignaturePolicy) single() bool { return p == CavageOnly || p == RFC9421Only }

// SchemeRecheckIntervalDefault is how long a domain's remembered scheme,
// when it is not the preferred one, is used before the preferred scheme is
// tried first again: at most one extra request per domain per interval.
const SchemeRecheckIntervalDefault = 30 * 24 * time.Hour

// SchemeSigner signs a request with a chosen signature scheme. With a
// SchemeSigner (*signer.Signer is one) as HTTPConfig.Signer, the HTTP
// sender knocks twice: when the first scheme is refused, it tries the other
// at once. A plain Signer signs with draft-cavage only.
type SchemeSigner interface {
	Signer
	SignWith(ctx context.Context, r *http.Request, actor string, o *signer.Options) error
}

// knocks returns the schemes to try for d, in order, and whether the first
// is a check of the preferred scheme (the domain's scheme is unknown or
// due for a re-check) rather than its remembered one.
func (h *HTTP) knocks(d *Delivery, now time.Time) (order [2]signer.Scheme, n int, checked bool) {
	p := h.cfg.SignaturePolicy
	pref := p.preferred()
	if p.single() {
		return [2]signer.Scheme{pref}, 1, false
	}
	first := pref
	switch {
	case d.Scheme == pref:
	case d.Scheme.Valid() && now.Sub(d.SchemeCheckedAt) < h.cfg.SchemeRecheckInterval:
		first = d.Scheme
	default:
		checked = true
	}
	return [2]signer.Scheme{first, first.Other()}, 2, checked
}

// refused reports whether status refuses the request's signature.
func (h *HTTP) refused(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusForbidden ||
		(status == http.StatusBadRequest && h.cfg.KnockOn400)
}

// SchemeChecker is implemented by senders that knock twice (HTTP with a
// SchemeSigner). The queue asks it whether the next delivery to a domain
// will check the preferred scheme, and sends the domain one request at a
// time until the answer is known, so that a refusal costs one extra
// request, not one per request in flight.
type SchemeChecker interface {
	// SchemeCheckDue reports whether a delivery to a domain that remembers
	// scheme, last checked at checkedAt, would try the preferred scheme
	// first and may need a second request.
	SchemeCheckDue(scheme signer.Scheme, checkedAt, now time.Time) bool
}

var _ SchemeChecker = (*HTTP)(nil)

// SchemeCheckDue implements SchemeChecker.
func (h *HTTP) SchemeCheckDue(scheme signer.Scheme, checkedAt, now time.Time) bool {
	if _, ok := h.cfg.Signer.(SchemeSigner); !ok {
		return false
	}
	_, _, checked := h.knocks(&Delivery{Scheme: scheme, SchemeCheckedAt: checkedAt}, now)
	return checked
}

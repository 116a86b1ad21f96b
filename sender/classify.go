package sender

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/apqueue/apqueue/signer"
)

// maxReason bounds Result.Reason in bytes.
const maxReason = 200

// classifyResponse maps an HTTP response to a Result.
func classifyResponse(resp *http.Response, d *Delivery, snippet []byte, unauthorizedAttempts int, now time.Time) Result {
	code := resp.StatusCode
	r := Result{Status: code}
	status := strconv.Itoa(code) + " " + http.StatusText(code)
	status = strings.TrimSpace(status)
	switch {
	case code >= 200 && code <= 299:
		r.Outcome = Delivered
		return r
	case code >= 300 && code <= 399:
		r.Outcome = Permanent
		loc := resp.Header.Get("Location")
		if loc == "" {
			r.Reason = oneLine(status + ": redirect not followed")
		} else {
			r.Reason = oneLine(status + ": redirect to " + loc + " not followed")
		}
		return r
	case code == http.StatusUnauthorized:
		if unauthorizedAttempts > 0 && d.Attempt <= unauthorizedAttempts {
			r.Outcome = Retry
		} else {
			r.Outcome = Permanent
			status = fmt.Sprintf("%s after %d attempts", status, d.Attempt)
		}
	case code == http.StatusGone && d.SharedInbox:
		r.Outcome = DomainGone
	case code == http.StatusGone, code == http.StatusNotFound && !d.SharedInbox:
		// A personal inbox that is not found, or gone: its actor was
		// deleted or moved away, not the domain.
		r.Outcome = InboxGone
	case code == http.StatusRequestTimeout:
		r.Outcome = Retry
	case code == http.StatusTooManyRequests:
		r.Outcome, r.DomainLevel = Retry, true
	case code == http.StatusBadGateway, code == http.StatusServiceUnavailable, code == http.StatusGatewayTimeout:
		r.Outcome, r.DomainLevel = Retry, true
	case code >= 400 && code <= 499:
		r.Outcome = Permanent
	default: // 5xx and anything unexpected
		r.Outcome = Retry
	}
	if r.Outcome == Retry {
		if v := resp.Header.Get("Retry-After"); v != "" {
			r.RetryAfter, _ = ParseRetryAfter(v, now)
		}
	}
	if s := oneLine(string(snippet)); s != "" {
		status += ": " + s
	}
	r.Reason = oneLine(status)
	return r
}

// classifySignError maps a signing failure to a Result. An actor without a
// key, with a key too weak to use, or with an Ed25519 key where only
// draft-cavage may be sent, cannot be fixed by retrying; anything
// else (a key source whose database failed for a moment) is retried, and
// the queue bounds the retries of one activity.
func classifySignError(parent context.Context, err error) Result {
	switch {
	case parent.Err() != nil:
		return Result{Outcome: Retry, Reason: oneLine("canceled while signing: " + err.Error())}
	case errors.Is(err, signer.ErrUnknownActor), errors.Is(err, signer.ErrWeakKey), errors.Is(err, signer.ErrCavageEd25519):
		return Result{Outcome: Permanent, Reason: oneLine("signing: " + err.Error())}
	}
	return Result{Outcome: Retry, Reason: oneLine("signing: " + err.Error())}
}

// classifyError maps a failed round trip to a Result. parent is the
// caller's context, whose end means the queue is stopping.
func classifyError(parent context.Context, err error) Result {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // drop the repeated method and URL
	}
	var blocked *BlockedAddressError
	if errors.As(err, &blocked) {
		return Result{Outcome: Permanent, Reason: oneLine("blocked: " + blocked.Error())}
	}
	if parent.Err() != nil {
		return Result{Outcome: Retry, Reason: oneLine("canceled: " + err.Error())}
	}
	var (
		dnsErr   *net.DNSError
		netErr   net.Error
		recErr   tls.RecordHeaderError
		alertErr tls.AlertError
		certErr  *tls.CertificateVerificationError
		unkAuth  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invErr   x509.CertificateInvalidError
	)
	kind := "connection"
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		kind = "timeout"
	case errors.As(err, &dnsErr):
		kind = "dns"
	case errors.As(err, &recErr), errors.As(err, &alertErr), errors.As(err, &certErr),
		errors.As(err, &unkAuth), errors.As(err, &hostErr), errors.As(err, &invErr):
		kind = "tls"
	}
	return Result{Outcome: Retry, DomainLevel: true, Reason: oneLine(kind + ": " + err.Error())}
}

// oneLine makes s a short single line: valid UTF-8, control characters and
// runs of white space turned into one space, at most maxReason bytes.
func oneLine(s string) string {
	var b strings.Builder
	space := false
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if b.Len()+utf8.RuneLen(r) > maxReason {
			return b.String() + "…"
		}
		b.WriteRune(r)
	}
	return b.String()
}

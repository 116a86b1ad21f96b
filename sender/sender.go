package sender

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	"github.com/apqueue/apqueue/signer"
)

// Sender delivers one activity to one inbox and classifies the result. It
// must be safe for concurrent use. Send must return when ctx ends (the queue
// cancels in-flight deliveries when it stops).
type Sender interface {
	Send(ctx context.Context, d *Delivery) Result
}

// SenderFunc adapts a function to the Sender interface.
type SenderFunc func(ctx context.Context, d *Delivery) Result

// Send calls f(ctx, d).
func (f SenderFunc) Send(ctx context.Context, d *Delivery) Result { return f(ctx, d) }

// Activity is the part of a delivery shared by every inbox an activity goes
// to. The queue builds one per activity and reuses it for every inbox and
// every attempt, so per-activity work (such as the body digest) is done once.
type Activity struct {
	// ID is the activity's ID in the log.
	ID int64
	// Actor is the IRI of the local actor whose key signs the delivery.
	Actor string
	// Body is the JSON object to POST. It must not be modified.
	Body []byte

	digestOnce sync.Once
	digest     string

	contentDigestOnce sync.Once
	contentDigest     string
}

// Digest returns the value of the Digest header for Body,
// "SHA-256=<base64>", computing it on the first call only.
func (a *Activity) Digest() string {
	a.digestOnce.Do(func() {
		sum := sha256.Sum256(a.Body)
		a.digest = "SHA-256=" + base64.StdEncoding.EncodeToString(sum[:])
	})
	return a.digest
}

// ContentDigest returns the value of the RFC 9530 Content-Digest header for
// Body, "sha-256=:<base64>:", computing it on the first call only.
func (a *Activity) ContentDigest() string {
	a.contentDigestOnce.Do(func() {
		sum := sha256.Sum256(a.Body)
		a.contentDigest = "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
	})
	return a.contentDigest
}

// Delivery is one attempt to deliver an activity to one inbox.
type Delivery struct {
	Activity *Activity
	// Inbox is the absolute URL to POST to.
	Inbox string
	// Domain is the inbox's normalised domain.
	Domain string
	// SharedInbox reports whether Inbox is the domain's shared inbox, where a
	// 410 Gone means the whole domain is gone.
	SharedInbox bool
	// Attempt counts attempts of this delivery, starting at 1.
	Attempt int
	// Scheme is the signature scheme the domain is known to accept, as
	// remembered in the store; "" when unknown. The HTTP sender signs with
	// it first, unless it is due for a re-check (see SchemeCheckedAt).
	Scheme signer.Scheme
	// SchemeCheckedAt is when the domain last refused the policy's
	// preferred scheme and accepted Scheme instead. Once it is older than
	// HTTPConfig.SchemeRecheckInterval, the preferred scheme is tried first
	// again, so that a server that upgrades is noticed.
	SchemeCheckedAt time.Time
}

// Outcome classifies the result of a delivery attempt.
type Outcome int

const (
	// Delivered: the inbox accepted the activity (2xx).
	Delivered Outcome = iota + 1
	// Retry: the attempt failed in a way that may pass later (408, 429, 5xx,
	// network errors, a 401 within its bounded retries).
	Retry
	// Permanent: the inbox refused this activity for good (other 4xx, and
	// a 404 from the shared inbox); the queue records a dead letter and
	// moves on.
	Permanent
	// DomainGone: the domain answered that it is gone (410 from its shared
	// inbox); the queue marks the domain dead.
	DomainGone
	// InboxGone: a personal inbox (not the domain's shared inbox) answered
	// 404 Not Found or 410 Gone: that recipient is gone, not the domain.
	// The queue records a dead letter, tells its Observer (so that the
	// server can drop the follower) and leaves the domain's health alone.
	InboxGone
)

func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case Retry:
		return "retry"
	case Permanent:
		return "permanent"
	case DomainGone:
		return "domain_gone"
	case InboxGone:
		return "inbox_gone"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Result is the classified result of one delivery attempt.
type Result struct {
	Outcome Outcome
	// Status is the HTTP status received, 0 when there was no response.
	Status int
	// RetryAfter is the delay the receiver asked for (Retry-After), zero when
	// none. The queue honours it up to its backoff cap.
	RetryAfter time.Duration
	// DomainLevel marks a Retry caused by the domain as a whole rather than
	// by this activity: connection refused, DNS, TLS, timeouts, 429, 502, 503,
	// 504. The queue then backs off the whole domain at once.
	DomainLevel bool
	// Reason is a short, single-line explanation for logs and dead letters.
	// When both signature schemes were refused it starts with
	// "signature rejected: cavage 401, rfc9421 401".
	Reason string
	// Scheme is the signature scheme the inbox accepted (set with
	// Delivered), "" when unsigned or unknown. The queue saves it with the
	// domain, so that the next delivery, in any process, starts with it.
	Scheme signer.Scheme
	// SchemeChecked reports that this attempt tried the policy's preferred
	// scheme first (the domain's scheme was unknown or due for a re-check),
	// so the queue records the time of the check with Scheme.
	SchemeChecked bool
	// Requests counts the HTTP requests the attempt made: 2 when the first
	// signature scheme was refused and the other was tried.
	Requests int
}

// Success returns a Delivered result with the given status.
func Success(status int) Result { return Result{Outcome: Delivered, Status: status} }

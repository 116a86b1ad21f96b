package queue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/apqueue/apqueue/internal/domain"
	"github.com/apqueue/apqueue/store"
)

// Activity is an outgoing activity and its recipients. At least one of
// Inboxes, Audiences and AllDomains must name a recipient; they combine.
type Activity struct {
	// Body is the activity as a JSON object. It is delivered byte for byte.
	Body []byte
	// Actor is the IRI of the local actor whose key signs the deliveries.
	// Default: the body's "actor" (a string, or an object's "id").
	Actor string
	// OrderingKey groups activities that must never be in flight to one
	// domain at once, so that a Delete never overtakes its Create. Default:
	// the IRI of the body's "object" (a string, or an object's "id"), else
	// the body's "id".
	OrderingKey string
	// Inboxes are explicit inbox URLs: absolute https URLs (http only with
	// Config.AllowHTTP), without user info or fragment.
	Inboxes []string
	// Audiences are keys, such as a followers collection IRI, that the
	// queue's Resolver turns into the inboxes of each known domain.
	Audiences []string
	// AllDomains addresses the activity to the shared inbox of every known
	// domain, for example an account deletion.
	AllDomains bool
}

// bodyFields are the parts of an activity body the queue reads.
type bodyFields struct {
	ID     json.RawMessage `json:"id"`
	Actor  json.RawMessage `json:"actor"`
	Object json.RawMessage `json:"object"`
}

// prepare validates a and turns it into what the store appends.
func (q *Queue) prepare(a Activity) (store.NewActivity, error) {
	if len(a.Body) > q.cfg.MaxBodyBytes {
		return store.NewActivity{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBodyTooLarge, len(a.Body), q.cfg.MaxBodyBytes)
	}
	trimmed := bytes.TrimSpace(a.Body)
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return store.NewActivity{}, fmt.Errorf("%w: not a JSON object", ErrInvalidBody)
	}
	var f bodyFields
	if err := json.Unmarshal(trimmed, &f); err != nil {
		return store.NewActivity{}, fmt.Errorf("%w: %v", ErrInvalidBody, err)
	}
	actor := a.Actor
	if actor == "" {
		actor = iri(f.Actor)
	}
	if actor == "" {
		return store.NewActivity{}, ErrMissingActor
	}
	if u, err := url.Parse(actor); err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return store.NewActivity{}, fmt.Errorf("%w: actor %q is not an absolute http(s) IRI", ErrMissingActor, actor)
	}
	key := a.OrderingKey
	if key == "" {
		key = iri(f.Object)
	}
	if key == "" {
		key = iri(f.ID)
	}
	if len(a.Inboxes) == 0 && len(a.Audiences) == 0 && !a.AllDomains {
		return store.NewActivity{}, ErrNoTargets
	}
	if len(a.Audiences) > 0 && q.cfg.Resolver == nil {
		return store.NewActivity{}, ErrNoResolver
	}
	out := store.NewActivity{
		Actor:       actor,
		OrderingKey: key,
		Body:        a.Body,
		AllDomains:  a.AllDomains,
	}
	seenInbox := make(map[string]bool, len(a.Inboxes))
	seenDomain := make(map[string]bool, len(a.Inboxes))
	for _, raw := range a.Inboxes {
		inbox, dom, err := q.checkInbox(raw)
		if err != nil {
			return store.NewActivity{}, err
		}
		if seenInbox[inbox] {
			continue
		}
		seenInbox[inbox] = true
		out.Inboxes = append(out.Inboxes, inbox)
		if !seenDomain[dom] {
			seenDomain[dom] = true
			out.Domains = append(out.Domains, dom)
		}
	}
	seenAudience := make(map[string]bool, len(a.Audiences))
	for _, aud := range a.Audiences {
		if aud == "" {
			return store.NewActivity{}, fmt.Errorf("%w: empty audience key", ErrNoTargets)
		}
		if !seenAudience[aud] {
			seenAudience[aud] = true
			out.Audiences = append(out.Audiences, aud)
		}
	}
	return out, nil
}

// checkInbox validates an inbox URL and returns it in normal form with its
// domain.
func (q *Queue) checkInbox(raw string) (inbox, dom string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("%w: %q: %v", ErrInvalidInbox, raw, err)
	}
	switch {
	case !u.IsAbs() || u.Host == "":
		return "", "", fmt.Errorf("%w: %q is not an absolute URL", ErrInvalidInbox, raw)
	case u.Scheme != "https" && !(u.Scheme == "http" && q.cfg.AllowHTTP):
		return "", "", fmt.Errorf("%w: %q: scheme %q not allowed", ErrInvalidInbox, raw, u.Scheme)
	case u.User != nil:
		return "", "", fmt.Errorf("%w: %q has user info", ErrInvalidInbox, raw)
	case u.Fragment != "" || u.RawFragment != "" || bytes.ContainsRune([]byte(raw), '#'):
		return "", "", fmt.Errorf("%w: %q has a fragment", ErrInvalidInbox, raw)
	}
	dom, err = domain.FromURL(u)
	if err != nil {
		return "", "", fmt.Errorf("%w: %q: %v", ErrInvalidInbox, raw, err)
	}
	u.Host = dom
	return u.String(), dom, nil
}

// iri returns a JSON-LD reference as a string: the string itself, or the
// "id" of an object.
func iri(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.ID
	}
	return ""
}

// domainOf returns the normalised domain of an already normalised URL.
func domainOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	d, err := domain.FromURL(u)
	if err != nil {
		return ""
	}
	return d
}

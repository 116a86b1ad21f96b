package queue

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strings"

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
	// domain at once: activities with the same key reach each domain in the
	// order they were enqueued, so a Delete never overtakes its Create nor
	// an Undo what it undoes. A key set here always wins. Default: derived
	// from the body so that an activity and every activity that wraps or
	// answers it share a key:
	//
	//   - Follow and Block: the pair of actors, "relationship A B" with A
	//     and B the actor and the object sorted, so a Follow, its Accept,
	//     Reject and Undo, and a Block and its Undo between the same two
	//     actors share a key whichever of them sent it.
	//   - Add and Remove: "collection T O", T the target collection and O
	//     the object's key, so pinning and unpinning one note share a key.
	//   - Every other type (Create, Update, Delete, Like, Dislike,
	//     Announce, EmojiReact, Move, Flag, ...) and the activities that
	//     wrap or answer one (Undo, Accept, Reject): the key of the body's
	//     "object". An embedded object is followed to the innermost one,
	//     whose "id" is the key: Create, Update and Delete of a note are
	//     keyed by the note, as are Like, Announce, EmojiReact and their
	//     Undo (and Lemmy's Announce{Create{Page}}); Update, Delete and
	//     Move of an actor by the actor. An object given as a string is
	//     the key itself.
	//   - A body without an object, or whose object is an array (a Flag of
	//     several objects) or has no "id": its "id".
	//
	// Unrelated activities that share an object, such as two users' Likes
	// of one note, share a key too; that only serialises them. An Undo,
	// Accept or Reject whose "object" is only the id of the activity it
	// wraps (a string) is keyed by that id, which does not match the
	// wrapped activity's key: the queue cannot know what the id names, so
	// the caller sets OrderingKey to the wrapped activity's key (for an
	// Undo{Like} given as an id, the liked note's IRI). At most eight
	// embedded objects are followed.
	OrderingKey string
	// Inboxes are explicit inbox URLs: absolute https URLs (http only with
	// Config.AllowHTTP), without user info or fragment.
	Inboxes []string
	// Audiences are keys, such as a followers collection IRI, that the
	// queue's Resolver turns into inboxes. The domains an audience reaches
	// are learned at enqueue and stored with the activity, so each of them
	// is registered (and delivered to) even if the queue never saw it.
	Audiences []string
	// AllDomains addresses the activity to the shared inbox of every known
	// domain, for example an account deletion.
	AllDomains bool
	// IdempotencyKey, when set, makes the enqueue safe to retry: while a key
	// is remembered (Config.IdempotencyWindow from the first enqueue with
	// it), enqueueing again with it writes nothing and returns the first
	// activity's ID, from any process sharing the store and inside a
	// caller's transaction too (EnqueueTx then appends nothing). Choose a
	// key that names what the caller means to send once, such as the
	// activity's id. At most store.IdempotencyKeyMaxLen bytes.
	IdempotencyKey string
}

// prepare validates a and turns it into what the store appends: explicit
// inboxes normalised, and the domains addressed by them and by the
// audiences (asked of the Resolver, cached per audience).
func (q *Queue) prepare(ctx context.Context, a Activity) (store.NewActivity, error) {
	if len(a.Body) > q.cfg.MaxBodyBytes {
		return store.NewActivity{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBodyTooLarge, len(a.Body), q.cfg.MaxBodyBytes)
	}
	f, err := parseBodyFields(bytes.TrimSpace(a.Body))
	if err != nil {
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
		key = defaultOrderingKey(f)
	}
	if len(a.Inboxes) == 0 && len(a.Audiences) == 0 && !a.AllDomains {
		return store.NewActivity{}, ErrNoTargets
	}
	if len(a.IdempotencyKey) > store.IdempotencyKeyMaxLen {
		return store.NewActivity{}, fmt.Errorf("%w: %d bytes, limit %d", ErrIdempotencyKeyTooLong, len(a.IdempotencyKey), store.IdempotencyKeyMaxLen)
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
	if a.IdempotencyKey != "" {
		out.IdempotencyKey, out.IdempotencyWindow = a.IdempotencyKey, q.cfg.IdempotencyWindow
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
		if seenAudience[aud] {
			continue
		}
		seenAudience[aud] = true
		out.Audiences = append(out.Audiences, aud)
		ans, err := q.resolver.answer(ctx, aud, "", 0)
		if err != nil {
			return store.NewActivity{}, &ResolveError{Audience: aud, Err: err}
		}
		if len(out.Domains) == 0 {
			// The common case, one audience and no inbox: its domains are
			// already distinct. The store copies them on the way in.
			out.Domains = ans.domains[:len(ans.domains):len(ans.domains)]
			if len(a.Audiences) == 1 {
				continue
			}
			for _, dom := range ans.domains {
				seenDomain[dom] = true
			}
			continue
		}
		for _, dom := range ans.domains {
			if !seenDomain[dom] {
				seenDomain[dom] = true
				out.Domains = append(out.Domains, dom)
			}
		}
	}
	return out, nil
}

// ResolveError is returned by Enqueue when the Resolver fails for one of an
// activity's audiences; nothing is enqueued.
type ResolveError struct {
	Audience string
	Err      error
}

func (e *ResolveError) Error() string {
	return fmt.Sprintf("queue: resolving audience %q: %v", e.Audience, e.Err)
}

func (e *ResolveError) Unwrap() error { return e.Err }

// checkInbox validates an inbox URL and returns it in normal form with its
// domain. An absolute URL refused for its scheme, user info or fragment
// still has its domain returned with the error.
func (q *Queue) checkInbox(raw string) (inbox, dom string, err error) {
	// Escape raw non-ASCII first: net/url re-escapes a path that mixes
	// them with %2F into another path.
	u, err := url.Parse(domain.EscapeURL(raw))
	if err != nil {
		return "", "", fmt.Errorf("%w: %q: %v", ErrInvalidInbox, raw, err)
	}
	if !u.IsAbs() || u.Host == "" {
		return "", "", fmt.Errorf("%w: %q is not an absolute URL", ErrInvalidInbox, raw)
	}
	dom, err = domain.FromURL(u)
	if err != nil {
		return "", "", fmt.Errorf("%w: %q: %v", ErrInvalidInbox, raw, err)
	}
	switch {
	case u.Scheme != "https" && !(u.Scheme == "http" && q.cfg.AllowHTTP):
		return "", dom, fmt.Errorf("%w: %q: scheme %q not allowed", ErrInvalidInbox, raw, u.Scheme)
	case u.User != nil:
		return "", dom, fmt.Errorf("%w: %q has user info", ErrInvalidInbox, raw)
	case u.Fragment != "" || u.RawFragment != "" || bytes.ContainsRune([]byte(raw), '#'):
		return "", dom, fmt.Errorf("%w: %q has a fragment", ErrInvalidInbox, raw)
	}
	u.Host = dom
	return u.String(), dom, nil
}

// hostOf returns the domain of an inbox URL that checkInbox normalised
// (its host is the domain, lower-case, with any non-default port), without
// parsing it again: what lies between "://" and the next "/", "?" or the
// end.
func hostOf(inbox string) string {
	_, rest, ok := strings.Cut(inbox, "://")
	if !ok {
		return ""
	}
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

package queue

import (
	"context"
	"sync"
	"time"

	"github.com/apqueue/apqueue/internal/clock"
)

// Resolver turns an audience key (for example a followers collection IRI)
// into the inboxes it reaches, on every domain. Return shared inboxes where
// the recipients have them; an empty answer means the audience reaches no
// one.
//
// The queue asks once per audience and caches the answer for
// Config.ResolverTTL: at enqueue, to learn which domains an activity
// addresses (they are registered with it, so a domain never seen before is
// delivered to), and in the processes that deliver, to find the inboxes on
// a domain whose shared inbox is not known. Call Queue.InvalidateAudience
// when an audience changes (a follow or unfollow) so that new activities use
// the new answer at once. Every process that enqueues or delivers
// activities with audiences needs the same Resolver.
//
// An inbox in the answer that cannot be delivered to (a scheme other than
// https, user info, a fragment) becomes a dead letter on its domain, with
// the reason, for each activity it would have received; one that names no
// domain is logged and skipped.
//
// A delivering process calls it on the domain's worker. It may call the
// queue with the context it was given: an admin change (Pause, say)
// returns at once, and the worker takes it in before it sends anything
// more, the delivery being resolved included.
type Resolver interface {
	Inboxes(ctx context.Context, audience string) ([]string, error)
}

// ResolverFunc adapts a function to the Resolver interface.
type ResolverFunc func(ctx context.Context, audience string) ([]string, error)

// Inboxes calls f(ctx, audience).
func (f ResolverFunc) Inboxes(ctx context.Context, audience string) ([]string, error) {
	return f(ctx, audience)
}

// audienceAnswer is a Resolver's answer for one audience, normalised and
// grouped by domain once, so that neither enqueue nor the workers parse an
// inbox URL again.
type audienceAnswer struct {
	byDomain map[string][]string
	// refused are the inboxes the Resolver named that cannot be delivered
	// to (checkInbox refused them), by domain, each with the reason: the
	// domain's worker records a dead letter for each rather than drop the
	// recipient. An inbox without a domain is only logged.
	refused map[string][]refusedInbox
	// domains are the keys of byDomain and refused, in the order the
	// Resolver named them.
	domains []string
	expires time.Time
	// freshFor is the highest activity ID for which the answer was asked
	// again because it lacked a domain the activity addresses (see
	// resolverCache.answer).
	freshFor int64
}

// refusedInbox is an inbox a Resolver named that cannot be delivered to.
type refusedInbox struct {
	inbox, reason string
}

// reaches reports whether the answer names an inbox on dom, usable or not.
func (a *audienceAnswer) reaches(dom string) bool {
	if _, ok := a.byDomain[dom]; ok {
		return true
	}
	_, ok := a.refused[dom]
	return ok
}

// addDomain adds dom to the answer's domains unless it is there.
func (a *audienceAnswer) addDomain(dom string) {
	if !a.reaches(dom) {
		a.domains = append(a.domains, dom)
	}
}

// resolverCache caches a Resolver's answers per audience. Its size is
// bounded by the audiences used within one TTL, and expired answers are
// swept.
type resolverCache struct {
	resolver Resolver
	ttl      time.Duration
	clock    clock.Clock
	// check validates and normalises an inbox and returns its domain, or
	// an error and, when the inbox names one, its domain.
	check func(raw string) (inbox, dom string, err error)

	mu      sync.Mutex
	entries map[string]*audienceAnswer
}

func newResolverCache(r Resolver, ttl time.Duration, c clock.Clock, check func(string) (string, string, error)) *resolverCache {
	return &resolverCache{resolver: r, ttl: ttl, clock: c, check: check, entries: make(map[string]*audienceAnswer)}
}

// answer returns the cached answer for audience, or asks the Resolver. When
// the activity with ID activityID addresses dom through the audience but a
// cached answer does not reach dom (it was cached before the follow that
// made the activity reach dom), the Resolver is asked again, once per
// audience and activity; pass dom "" to take any cached answer.
func (c *resolverCache) answer(ctx context.Context, audience, dom string, activityID int64) (*audienceAnswer, error) {
	now := c.clock.Now()
	c.mu.Lock()
	a, ok := c.entries[audience]
	if ok && now.Before(a.expires) {
		if dom == "" || a.reaches(dom) || a.freshFor >= activityID {
			c.mu.Unlock()
			return a, nil
		}
	}
	c.mu.Unlock()

	raw, err := c.resolver.Inboxes(ctx, audience)
	if err != nil {
		return nil, err
	}
	fresh := &audienceAnswer{byDomain: make(map[string][]string), expires: now.Add(c.ttl), freshFor: activityID}
	seen := make(map[string]bool, len(raw))
	for _, r := range raw {
		inbox, d, err := c.check(r)
		if err != nil {
			// Logged by check; recorded on its domain when it has one.
			if d != "" && !seen[r] {
				seen[r] = true
				fresh.addDomain(d)
				if fresh.refused == nil {
					fresh.refused = make(map[string][]refusedInbox)
				}
				fresh.refused[d] = append(fresh.refused[d], refusedInbox{inbox: r, reason: err.Error()})
			}
			continue
		}
		if seen[inbox] {
			continue
		}
		seen[inbox] = true
		fresh.addDomain(d)
		fresh.byDomain[d] = append(fresh.byDomain[d], inbox)
	}
	c.mu.Lock()
	c.entries[audience] = fresh
	c.mu.Unlock()
	return fresh, nil
}

// invalidate forgets the answer for audience, or all answers when audience
// is empty.
func (c *resolverCache) invalidate(audience string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if audience == "" {
		clear(c.entries)
		return
	}
	delete(c.entries, audience)
}

// sweep drops expired answers.
func (c *resolverCache) sweep() {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
}

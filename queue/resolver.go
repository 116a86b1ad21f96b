package queue

import (
	"context"
	"sync"
	"time"

	"github.com/apqueue/apqueue/internal/clock"
)

// Resolver turns an audience key (for example a followers collection IRI)
// into the inboxes it reaches on one domain. The queue asks it once per
// audience and domain and caches the answer for Config.ResolverTTL; call
// Queue.InvalidateAudience when an audience changes (a follow or unfollow) to
// have new activities use the new answer at once. Return shared inboxes
// where the recipients have them; an empty answer means the audience reaches
// no one on that domain. Inboxes on other domains are ignored.
type Resolver interface {
	Inboxes(ctx context.Context, audience, domain string) ([]string, error)
}

// ResolverFunc adapts a function to the Resolver interface.
type ResolverFunc func(ctx context.Context, audience, domain string) ([]string, error)

// Inboxes calls f(ctx, audience, domain).
func (f ResolverFunc) Inboxes(ctx context.Context, audience, domain string) ([]string, error) {
	return f(ctx, audience, domain)
}

type audienceDomain struct{ audience, domain string }

type resolved struct {
	inboxes []string
	expires time.Time
}

// resolverCache caches a Resolver's answers per audience and domain. Its size
// is bounded by the audiences used within one TTL times the domains, and
// expired answers are swept.
type resolverCache struct {
	resolver Resolver
	ttl      time.Duration
	clock    clock.Clock

	mu      sync.Mutex
	entries map[audienceDomain]resolved
}

func newResolverCache(r Resolver, ttl time.Duration, c clock.Clock) *resolverCache {
	return &resolverCache{resolver: r, ttl: ttl, clock: c, entries: make(map[audienceDomain]resolved)}
}

// inboxes returns the cached answer or asks the resolver. check validates
// and normalises each inbox; inboxes it refuses are dropped.
func (c *resolverCache) inboxes(ctx context.Context, audience, dom string, check func(string) (string, bool)) ([]string, error) {
	key := audienceDomain{audience, dom}
	now := c.clock.Now()
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.inboxes, nil
	}
	raw, err := c.resolver.Inboxes(ctx, audience, dom)
	if err != nil {
		return nil, err
	}
	var inboxes []string
	for _, r := range raw {
		if inbox, ok := check(r); ok {
			inboxes = append(inboxes, inbox)
		}
	}
	c.mu.Lock()
	c.entries[key] = resolved{inboxes: inboxes, expires: now.Add(c.ttl)}
	c.mu.Unlock()
	return inboxes, nil
}

// invalidate forgets the answers for audience, or all answers when audience
// is empty.
func (c *resolverCache) invalidate(audience string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if audience == "" {
		clear(c.entries)
		return
	}
	for k := range c.entries {
		if k.audience == audience {
			delete(c.entries, k)
		}
	}
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

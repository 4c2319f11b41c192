package flyapi

import (
	"context"
	"sync"
	"time"
)

// DefaultOrgCacheTTL is how long CachedOrganization keeps a lookup when
// Options.OrgCacheTTL is 0.
const DefaultOrgCacheTTL = 5 * time.Minute

// orgCache remembers organization lookups by the slug asked for. An org's
// node ID never changes; the TTL only bounds how long a deleted org, or a
// token that lost access, goes unnoticed by callers that never look up.
type orgCache struct {
	ttl time.Duration // <= 0: disabled
	now func() time.Time

	mu      sync.Mutex
	entries map[string]orgEntry
}

type orgEntry struct {
	org     Organization
	expires time.Time
}

func newOrgCache(ttl time.Duration) *orgCache {
	return &orgCache{ttl: ttl, now: time.Now, entries: map[string]orgEntry{}}
}

func (c *orgCache) get(slug string) (Organization, bool) {
	if c.ttl <= 0 {
		return Organization{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[slug]
	if !ok || !c.now().Before(e.expires) {
		delete(c.entries, slug)
		return Organization{}, false
	}
	return e.org, true
}

func (c *orgCache) put(slug string, o Organization) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries[slug] = orgEntry{org: o, expires: c.now().Add(c.ttl)}
}

func (c *orgCache) forget(slug string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, slug)
}

func (c *orgCache) forgetID(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if e.org.ID == id {
			delete(c.entries, k)
		}
	}
}

func (c *orgCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
}

// CachedOrganization is Organization with a cache (Options.OrgCacheTTL,
// default 5 minutes) keyed by the slug asked for: the call admissions and
// removals make, so that an org is looked up once per TTL, not once per
// pod. Errors are never cached. The cache empties when the token changes
// and forgets an org that a mutation reports as not found. For a check that
// must reach Fly (is the token accepted, does the org exist), call
// Organization.
func (c *Client) CachedOrganization(ctx context.Context, slug string) (*Organization, error) {
	// Ask the provider first: a rotated token empties the cache, and with
	// no usable token there is no org to return.
	if _, err := c.currentAuth(ctx, OpOrganization); err != nil {
		return nil, err
	}
	if o, ok := c.orgs.get(slug); ok {
		return &o, nil
	}
	return c.Organization(ctx, slug)
}

// ForgetOrganization drops slug from the organization cache.
func (c *Client) ForgetOrganization(slug string) { c.orgs.forget(slug) }

func (c *Client) forgetOrganizationID(id string) { c.orgs.forgetID(id) }

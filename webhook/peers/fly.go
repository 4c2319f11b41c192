package peers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/glaceon/glaceon/flyapi"
)

// flyOps wraps the FlyClient with a per-call timeout, error metrics and a
// cache of organization node IDs (they never change, and RemovePeer would
// otherwise look the org up on every call).
type flyOps struct {
	c       FlyClient
	timeout time.Duration

	mu   sync.Mutex
	orgs map[string]flyapi.Organization
}

func newFlyOps(c FlyClient, timeout time.Duration) *flyOps {
	return &flyOps{c: c, timeout: timeout, orgs: map[string]flyapi.Organization{}}
}

func (f *flyOps) org(ctx context.Context, slug string) (flyapi.Organization, error) {
	f.mu.Lock()
	o, ok := f.orgs[slug]
	f.mu.Unlock()
	if ok {
		return o, nil
	}
	got, err := f.c.Organization(ctx, slug)
	if err != nil {
		flyErrors.WithLabelValues(opOrganization, errorKind(err)).Inc()
		return flyapi.Organization{}, err
	}
	if got == nil || got.ID == "" {
		flyErrors.WithLabelValues(opOrganization, "other").Inc()
		return flyapi.Organization{}, fmt.Errorf("look up organization %q: empty answer", slug)
	}
	o = *got
	// RemovePeer lists by slug: keep the one we were given (the API may
	// answer with the raw slug of a personal org).
	o.Slug = slug
	f.mu.Lock()
	f.orgs[slug] = o
	f.mu.Unlock()
	return o, nil
}

// removePeer removes the peer name of org slug; already gone is success.
func (f *flyOps) removePeer(ctx context.Context, slug, name string) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	o, err := f.org(ctx, slug)
	if err == nil {
		if err = f.c.RemovePeer(ctx, o, name); err != nil {
			flyErrors.WithLabelValues(opRemovePeer, errorKind(err)).Inc()
		}
	}
	if err != nil {
		peersRemoved.WithLabelValues(resultError).Inc()
		return err
	}
	peersRemoved.WithLabelValues(resultRemoved).Inc()
	return nil
}

// listPeers lists the peers of org slug.
func (f *flyOps) listPeers(ctx context.Context, slug string) ([]flyapi.Peer, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	peers, err := f.c.ListPeers(ctx, slug)
	if err != nil {
		flyErrors.WithLabelValues(opListPeers, errorKind(err)).Inc()
		return nil, err
	}
	return peers, nil
}

// isContextDeadline reports a Fly call cut by its timeout.
func isContextDeadline(err error) bool { return errors.Is(err, context.DeadlineExceeded) }

package peers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/glaceon/glaceon/flyapi"
)

// flyOps wraps the FlyClient with a per-call timeout and the removal
// counter. The Fly client itself caches org lookups and records the
// glaceon_fly_api_* metrics.
type flyOps struct {
	c       FlyClient
	timeout time.Duration
}

func newFlyOps(c FlyClient, timeout time.Duration) *flyOps {
	return &flyOps{c: c, timeout: timeout}
}

func (f *flyOps) org(ctx context.Context, slug string) (flyapi.Organization, error) {
	got, err := f.c.CachedOrganization(ctx, slug)
	if err != nil {
		return flyapi.Organization{}, err
	}
	if got == nil || got.ID == "" {
		return flyapi.Organization{}, fmt.Errorf("look up organization %q: empty answer", slug)
	}
	o := *got
	// RemovePeer looks the peer up by slug: keep the one we were given (the
	// API may answer with the canonical slug of a personal org).
	o.Slug = slug
	return o, nil
}

// removePeer removes the peer name of org slug; already gone is success.
func (f *flyOps) removePeer(ctx context.Context, slug, name string) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	o, err := f.org(ctx, slug)
	if err == nil {
		err = f.c.RemovePeer(ctx, o, name)
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
	return f.c.ListPeers(ctx, slug)
}

// isContextDeadline reports a Fly call cut by its timeout.
func isContextDeadline(err error) bool { return errors.Is(err, context.DeadlineExceeded) }

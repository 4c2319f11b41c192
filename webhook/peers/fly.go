package peers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/flyapi"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/flyorg"
)

// flyOps reaches Fly with the client of a FlyOrg, with a per-call timeout.
// The client records the glaceon_fly_api_* metrics, labelled by FlyOrg.
type flyOps struct {
	orgs    *flyorg.Registry
	reader  client.Reader // FlyOrgs (the manager's cache)
	timeout time.Duration
}

// errNoFlyOrg: the FlyPeer's FlyOrg is gone, so there is no token to
// remove its peer with.
var errNoFlyOrg = errors.New("FlyOrg not found")

func (f *flyOps) client(ctx context.Context, orgName string) (*glaceonv1alpha1.FlyOrg, flyorg.FlyAPI, error) {
	var org glaceonv1alpha1.FlyOrg
	if err := f.reader.Get(ctx, client.ObjectKey{Name: orgName}, &org); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil, nil, fmt.Errorf("%w: FlyOrg %q (recreate it with a token of the org to let glaceon remove the peer)", errNoFlyOrg, orgName)
		}
		return nil, nil, fmt.Errorf("get FlyOrg %q: %w", orgName, err)
	}
	fly, err := f.orgs.Client(ctx, &org)
	if err != nil {
		return nil, nil, err
	}
	return &org, fly, nil
}

// removePeer removes fp's Fly peer: one removeWireGuardPeer call by org ID
// and name; a peer already gone is success.
func (f *flyOps) removePeer(ctx context.Context, fp *glaceonv1alpha1.FlyPeer) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	org, fly, err := f.client(ctx, fp.Spec.Org)
	if err == nil {
		orgID := fp.Status.OrganizationID
		if orgID == "" {
			orgID = org.Status.OrganizationID
		}
		if orgID == "" {
			err = fmt.Errorf("FlyOrg %q has no organization ID yet (see its Ready condition)", org.Name)
		} else {
			err = fly.RemovePeer(ctx, flyapi.Organization{ID: orgID}, fp.Name)
		}
	}
	if err != nil {
		peersRemoved.WithLabelValues(resultError).Inc()
		return err
	}
	peersRemoved.WithLabelValues(resultRemoved).Inc()
	return nil
}

// removeByName removes a Fly peer of org that has no FlyPeer.
func (f *flyOps) removeByName(ctx context.Context, fly flyorg.FlyAPI, orgID, name string) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	return fly.RemovePeer(ctx, flyapi.Organization{ID: orgID}, name)
}

// listPeers lists the peers of org slug.
func (f *flyOps) listPeers(ctx context.Context, fly flyorg.FlyAPI, slug string) ([]flyapi.Peer, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	return fly.ListPeers(ctx, slug)
}

// isContextDeadline reports a Fly call cut by its timeout.
func isContextDeadline(err error) bool { return errors.Is(err, context.DeadlineExceeded) }

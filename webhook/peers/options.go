package peers

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"k8s.io/utils/clock"

	"github.com/glaceon/glaceon/flyapi"
)

// Names of this package's controllers and Event reasons. Event reasons are
// API for people who alert on them: do not rename.
const (
	// ControllerName names the peer Secret controller (logs, metrics) and is
	// the reportingController of its Events.
	ControllerName = "glaceon-peers"
	// SweeperName names the sweeper in logs.
	SweeperName = "glaceon-peer-sweeper"

	// ReasonPeerRemovalAbandoned: the Fly peer could not be removed within
	// Options.RemovalDeadline; the finalizer was removed anyway and the
	// sweeper will remove the peer.
	ReasonPeerRemovalAbandoned = "PeerRemovalAbandoned"
	// ReasonPeerRemovalUnauthorized: the Fly API refused the token for
	// removing the peer; the controller keeps retrying until the deadline.
	ReasonPeerRemovalUnauthorized = "PeerRemovalUnauthorized"
	// ReasonPeerRemovalFailed: the Fly API rejected the removal for another
	// non-transient reason; the controller keeps retrying until the deadline.
	ReasonPeerRemovalFailed = "PeerRemovalFailed"
	// ReasonPeerLabelsMissing: a deleting peer Secret has no org label, so
	// its peer cannot be located; the finalizer is removed and the sweeper
	// handles the peer.
	ReasonPeerLabelsMissing = "PeerLabelsMissing"
	// ReasonUnclaimedSecretDeleted: the sweeper deleted a peer Secret no pod
	// claimed within the grace period.
	ReasonUnclaimedSecretDeleted = "UnclaimedPeerSecretDeleted"

	// eventAction is the events.k8s.io/v1 action of every Event here.
	eventActionRemove = "RemovePeer"
	eventActionSweep  = "SweepPeer"
)

// Defaults for Options.
const (
	DefaultGrace           = 5 * time.Minute
	DefaultSweepInterval   = time.Minute
	DefaultRemovalDeadline = 10 * time.Minute
	DefaultRetryBaseDelay  = time.Second
	DefaultRetryMaxDelay   = 2 * time.Minute
	DefaultFlyCallTimeout  = 30 * time.Second
	DefaultMaxConcurrent   = 2
)

// FlyClient is the part of the Fly API the controller uses. *flyapi.Client
// implements it, and owns the org lookup cache and the Fly metrics.
type FlyClient interface {
	// CachedOrganization looks an organization up by slug (for its node
	// ID), from the client's cache when it can.
	CachedOrganization(ctx context.Context, slug string) (*flyapi.Organization, error)
	// ListPeers lists every WireGuard peer of the organization.
	ListPeers(ctx context.Context, orgSlug string) ([]flyapi.Peer, error)
	// RemovePeer removes a peer by name; a peer already gone is success.
	RemovePeer(ctx context.Context, org flyapi.Organization, name string) error
}

var _ FlyClient = (*flyapi.Client)(nil)

// Options configure SetupWithManager. Fly is required; the zero value of
// everything else is a default.
type Options struct {
	// Fly is the Fly API client (a *flyapi.Client). Required.
	Fly FlyClient

	// Prefix starts the name of every peer this cluster's webhook creates,
	// e.g. "k8s-prod-". The sweeper only ever removes Fly peers whose name
	// starts with it, so it must identify this cluster's peers: peers of
	// other clusters sharing an org must use another prefix. Required when
	// Orgs is set; must match [a-z0-9-]+.
	Prefix string
	// Orgs are the Fly org slugs whose peers the sweeper lists for orphans.
	// Empty disables the Fly half of the sweeper (peer Secrets are still
	// swept, and deleting Secrets still remove their peer in any org).
	Orgs []string

	// Grace is how long a peer Secret may go unclaimed, and how long a Fly
	// peer must stay orphaned, before the sweeper removes it. It must cover
	// an admission from the Fly call to the pod's creation. Default 5m.
	Grace time.Duration
	// SweepInterval is the time between two sweeps. Default 1m.
	SweepInterval time.Duration
	// RemovalDeadline bounds how long, counted from the Secret's
	// deletionTimestamp, the finalizer waits for a failing Fly API before it
	// lets the Secret go. Default 10m.
	RemovalDeadline time.Duration
	// RetryBaseDelay and RetryMaxDelay bound the exponential backoff between
	// two removal attempts of one Secret. Default 1s and 2m.
	RetryBaseDelay, RetryMaxDelay time.Duration
	// FlyCallTimeout bounds one Fly operation (with the client's own
	// retries). Default 30s.
	FlyCallTimeout time.Duration
	// MaxConcurrentReconciles of the Secret controller. Default 2.
	MaxConcurrentReconciles int
	// DisableSweeper runs the Secret controller alone.
	DisableSweeper bool

	// Clock is for tests; default the real clock.
	Clock clock.WithTicker
}

// prefixRE is the shape of a peer-name prefix (peer names are [a-z0-9-]).
var prefixRE = regexp.MustCompile(`^[a-z0-9-]+$`)

// setDefaults fills zero values.
func (o *Options) setDefaults() {
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.RemovalDeadline <= 0 {
		o.RemovalDeadline = DefaultRemovalDeadline
	}
	if o.RetryBaseDelay <= 0 {
		o.RetryBaseDelay = DefaultRetryBaseDelay
	}
	if o.RetryMaxDelay <= 0 {
		o.RetryMaxDelay = DefaultRetryMaxDelay
	}
	if o.RetryMaxDelay < o.RetryBaseDelay {
		o.RetryMaxDelay = o.RetryBaseDelay
	}
	if o.FlyCallTimeout <= 0 {
		o.FlyCallTimeout = DefaultFlyCallTimeout
	}
	if o.MaxConcurrentReconciles <= 0 {
		o.MaxConcurrentReconciles = DefaultMaxConcurrent
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
}

// validate reports every problem at once.
func (o *Options) validate() error {
	var errs []error
	if o.Fly == nil {
		errs = append(errs, errors.New("Options.Fly is nil: pass the *flyapi.Client"))
	}
	if o.Prefix != "" && !prefixRE.MatchString(o.Prefix) {
		errs = append(errs, fmt.Errorf("Options.Prefix %q: use lower-case letters, digits and '-' (peer names are [a-z0-9-])", o.Prefix))
	}
	if len(o.Orgs) > 0 && o.Prefix == "" {
		errs = append(errs, errors.New("Options.Prefix is empty but Orgs is set: the sweeper needs the prefix of this cluster's peer names so that it never removes peers it did not create"))
	}
	for _, org := range o.Orgs {
		if org == "" {
			errs = append(errs, errors.New("Options.Orgs has an empty slug"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("peers: %w", err)
	}
	return nil
}

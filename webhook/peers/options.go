package peers

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/utils/clock"

	"github.com/glaceon/glaceon/webhook/flyorg"
)

// Names of this package's controllers and Event reasons. Event reasons are
// API for people who alert on them: do not rename.
const (
	// ControllerName names the FlyPeer controller (logs, metrics) and is
	// the reportingController of its Events.
	ControllerName = "glaceon-flypeer"
	// SweeperName names the sweeper in logs.
	SweeperName = "glaceon-peer-sweeper"

	// ReasonPeerRemovalAbandoned: the Fly peer could not be removed within
	// Options.RemovalDeadline; the finalizer was removed anyway and the
	// sweeper will remove the peer.
	ReasonPeerRemovalAbandoned = "PeerRemovalAbandoned"
	// ReasonPeerRemovalUnauthorized: the Fly API refused the token for
	// removing the peer; the controller keeps retrying until the deadline.
	ReasonPeerRemovalUnauthorized = "PeerRemovalUnauthorized"
	// ReasonPeerRemovalFailed: removal failed for another reason; retried
	// until the deadline.
	ReasonPeerRemovalFailed = "PeerRemovalFailed"
	// ReasonUnclaimed: the sweeper deleted a FlyPeer no pod claimed within
	// the grace period (admission died, or the pod was rejected after it).
	ReasonUnclaimed = "UnclaimedFlyPeerDeleted"
	// ReasonRemoved is the Removed condition's reason while removal fails.
	ReasonRemovalPending = "RemovalPending"

	eventActionRemove = "RemovePeer"
	eventActionSweep  = "SweepPeer"
)

// Defaults and limits for Options.
const (
	DefaultGrace           = 5 * time.Minute
	DefaultSweepInterval   = time.Minute
	DefaultRemovalDeadline = 10 * time.Minute
	DefaultRetryBaseDelay  = time.Second
	DefaultRetryMaxDelay   = 2 * time.Minute
	DefaultFlyCallTimeout  = 30 * time.Second
	DefaultMaxConcurrent   = 2
	// MinGrace is the floor of Options.Grace: an admission (webhook
	// timeoutSeconds at most 30s) plus the pod's creation must fit in it
	// with room for clock skew, or the sweeper could delete a FlyPeer whose
	// pod is about to be stored.
	MinGrace = time.Minute
)

// Options configure SetupWithManager. Orgs and Namer are required; the zero
// value of everything else is a default.
type Options struct {
	// Orgs gives the Fly client of each FlyOrg.
	Orgs *flyorg.Registry
	// Namer makes and recognises this cluster's peer names. The sweeper
	// removes Fly peers only when Namer.Ours says the name is this
	// cluster's and no FlyPeer names it.
	Namer *Namer

	// Grace is how long a FlyPeer may go unclaimed by a pod before the
	// sweeper deletes it. At least MinGrace; default 5m. Ages are measured
	// against the API server's clock.
	Grace time.Duration
	// SweepInterval is the time between two sweeps. Default 1m.
	SweepInterval time.Duration
	// RemovalDeadline bounds how long, from its deletion, a FlyPeer waits
	// for a failing Fly API before its finalizer is released (the sweeper
	// then removes the orphaned Fly peer). Default 10m.
	RemovalDeadline time.Duration
	// RetryBaseDelay and RetryMaxDelay bound the backoff between two
	// removal attempts. Default 1s and 2m.
	RetryBaseDelay, RetryMaxDelay time.Duration
	// FlyCallTimeout bounds one Fly operation. Default 30s.
	FlyCallTimeout time.Duration
	// MaxConcurrentReconciles of the FlyPeer controller. Default 2.
	MaxConcurrentReconciles int
	// DisableSweeper runs the FlyPeer controller alone.
	DisableSweeper bool
	// AllowShortGrace lifts the MinGrace floor (tests only).
	AllowShortGrace bool

	// Clock is for tests; default the real clock.
	Clock clock.WithTicker
}

func (o *Options) setDefaults() {
	if o.Grace == 0 {
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

// ValidateGrace checks a sweep grace period against the floor.
func ValidateGrace(grace time.Duration) error {
	if grace < MinGrace {
		return fmt.Errorf("sweep grace %s is under the minimum of %s: the sweeper could delete a peer whose pod is being created (and clocks drift); use --sweep-grace=%s or more", grace, MinGrace, MinGrace)
	}
	return nil
}

func (o *Options) validate() error {
	var errs []error
	if o.Orgs == nil {
		errs = append(errs, errors.New("Options.Orgs is nil: pass the FlyOrg registry"))
	}
	if o.Namer == nil {
		errs = append(errs, errors.New("Options.Namer is nil: the sweeper must know this cluster's peer names"))
	}
	if !o.AllowShortGrace {
		if err := ValidateGrace(o.Grace); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("peers: %w", err)
	}
	return nil
}

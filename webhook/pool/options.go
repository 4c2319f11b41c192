package pool

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/utils/clock"

	"github.com/glaceon/glaceon/webhook/flyorg"
	"github.com/glaceon/glaceon/webhook/peers"
)

// Names of the pool's controller, condition reasons and Events. Reasons
// are API for people who alert on them: do not rename.
const (
	// ControllerName names the refill controller (logs, metrics, Events).
	ControllerName = "glaceon-pool"

	// ReasonFull: PoolReady=True, every region at its size.
	ReasonFull = "Full"
	// ReasonRefilling: PoolReady=True, every region has a peer but some
	// are below their size.
	ReasonRefilling = "Refilling"
	// ReasonDepleted: PoolReady=False, a region has no Available peer.
	ReasonDepleted = "Depleted"
	// ReasonPoolEmpty: Event on the FlyOrg when an admission found no
	// pooled peer and called Fly.
	ReasonPoolEmpty = "PoolEmpty"
	// ReasonRefillFailed: Event on the FlyOrg when adding a pooled peer
	// failed; the refill backs off.
	ReasonRefillFailed = "PoolRefillFailed"

	eventActionRefill = "Refill"
)

// Defaults and limits for Options.
const (
	// DefaultMaxAge: pooled peers are replaced after 30 days unused.
	DefaultMaxAge = 30 * 24 * time.Hour
	// MinMaxAge is the floor of Options.MaxAge: below it the pool mostly
	// churns Fly peers.
	MinMaxAge      = time.Hour
	DefaultRate    = 5.0 // peers per second per FlyOrg
	DefaultBurst   = 5
	DefaultWorkers = 4
	DefaultRetry   = time.Second
	DefaultMaxWait = 5 * time.Minute
)

// Options configure SetupWithManager.
type Options struct {
	// Orgs gives each FlyOrg's Fly client; its Namespace is where pooled
	// key Secrets live.
	Orgs *flyorg.Registry
	// Namer makes the pooled peers' names (the sweeper's pattern).
	Namer *peers.Namer
	// GatewayPort is written into wg-quick files (0: 51820).
	GatewayPort int
	// MaxAge is how long a pooled peer may wait before it is replaced. At
	// least MinMaxAge (unless AllowShortMaxAge); default DefaultMaxAge.
	MaxAge time.Duration
	// Rate and Burst limit additions per FlyOrg (peers per second).
	Rate  float64
	Burst int
	// Workers is how many additions of one FlyOrg run at once (Fly calls
	// overlap; the rate still bounds them).
	Workers int
	// RetryBaseDelay and RetryMaxDelay bound the backoff while Fly fails.
	RetryBaseDelay, RetryMaxDelay time.Duration
	// FlyTimeout bounds one addWireGuardPeer. Default 30s.
	FlyTimeout time.Duration
	// Clock measures pooled peers' ages; default the real clock (tests
	// move it forward to see rotation).
	Clock clock.PassiveClock
	// AllowShortMaxAge lifts the MinMaxAge floor (tests only).
	AllowShortMaxAge bool
	// TestHook, when set, is called after each refill step (Step*) with
	// the FlyPeer's name; an error ends that refill at once with no
	// clean-up, as if the process died there. Tests only.
	TestHook func(step, flypeer string) error
}

// Steps of one refill, passed to Options.TestHook.
const (
	StepAfterFlyPeer = "pool-after-flypeer"
	StepAfterFly     = "pool-after-fly"
	StepAfterSecret  = "pool-after-secret"
)

func (o *Options) setDefaults() {
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.Rate <= 0 {
		o.Rate = DefaultRate
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.RetryBaseDelay <= 0 {
		o.RetryBaseDelay = DefaultRetry
	}
	if o.RetryMaxDelay < o.RetryBaseDelay {
		o.RetryMaxDelay = max(DefaultMaxWait, o.RetryBaseDelay)
	}
	if o.FlyTimeout <= 0 {
		o.FlyTimeout = peers.DefaultFlyCallTimeout
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
}

// ValidateMaxAge checks a pooled peer's maximum age against the floor.
func ValidateMaxAge(age time.Duration) error {
	if age < MinMaxAge {
		return fmt.Errorf("pool max age %s is under the minimum of %s: pooled peers would be replaced before they are used; use --pool-max-age=%s or more", age, MinMaxAge, MinMaxAge)
	}
	return nil
}

func (o *Options) validate() error {
	var errs []error
	if o.Orgs == nil {
		errs = append(errs, errors.New("Options.Orgs is nil: pass the FlyOrg registry"))
	}
	if o.Namer == nil {
		errs = append(errs, errors.New("Options.Namer is nil: pooled peers need this cluster's names"))
	}
	if !o.AllowShortMaxAge {
		if err := ValidateMaxAge(o.MaxAge); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pool: %w", err)
	}
	return nil
}

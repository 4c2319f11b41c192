package flyapi

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names. Every Client reports to one Metrics (Options.Metrics,
// default DefaultMetrics); the program registers it once (RegisterMetrics).
const (
	MetricRequests = "glaceon_fly_api_requests_total"
	MetricDuration = "glaceon_fly_api_duration_seconds"
	MetricErrors   = "glaceon_fly_api_errors_total"
)

// Result label values of MetricRequests besides the error kinds.
const ResultOK = "ok"

// Metrics are the glaceon_fly_api_* series. Labels: org (Options.Org, the
// FlyOrg a client serves; "" if unset), op (the GraphQL field: organization,
// nearestRegion, addWireGuardPeer, wireGuardPeers, wireGuardPeer,
// removeWireGuardPeer, validateWireGuardPeers), result (ok or an error kind:
// unauthorized, not_found, invalid, conflict, rate_limited, transient,
// unknown) and kind (the error kind). It is a prometheus.Collector.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
}

// NewMetrics returns unregistered metrics (tests use their own).
func NewMetrics() *Metrics {
	return &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequests,
			Help: "HTTP requests sent to the Fly GraphQL API (every attempt, retries included), by org, GraphQL operation and result (ok or the error kind).",
		}, []string{"org", "op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricDuration,
			Help:    "Latency of one Fly API GraphQL call (one document; retries and backoff included), by org and GraphQL operation.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"org", "op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricErrors,
			Help: "Fly API GraphQL calls that failed after retries, by org, GraphQL operation and error kind (a removal of a peer already gone counts as not_found).",
		}, []string{"org", "op", "kind"}),
	}
}

// DefaultMetrics is used by clients whose Options.Metrics is nil.
var DefaultMetrics = NewMetrics()

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.requests.Describe(ch)
	m.duration.Describe(ch)
	m.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.requests.Collect(ch)
	m.duration.Collect(ch)
	m.errors.Collect(ch)
}

// RegisterMetrics registers m (nil: DefaultMetrics) with reg; registering
// the same metrics twice is not an error.
func RegisterMetrics(reg prometheus.Registerer, m *Metrics) error {
	if m == nil {
		m = DefaultMetrics
	}
	err := reg.Register(m)
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) && already.ExistingCollector == prometheus.Collector(m) {
		return nil
	}
	return err
}

// opLabel maps an operation to its GraphQL field, the "op" label.
func opLabel(op string) string {
	switch op {
	case OpOrganization:
		return "organization"
	case OpNearestRegion:
		return "nearestRegion"
	case OpAddPeer:
		return "addWireGuardPeer"
	case OpListPeers:
		return "wireGuardPeers"
	case OpPeer:
		return "wireGuardPeer"
	case OpRemovePeer:
		return "removeWireGuardPeer"
	case OpValidatePeers:
		return "validateWireGuardPeers"
	}
	return "other"
}

// KindLabel is the bounded label value for an error's kind
// ("not_found"), or "ok" for nil; "unknown" for an error that is not a
// *Error.
func KindLabel(err error) string {
	if err == nil {
		return ResultOK
	}
	k, ok := kindOf(err)
	if !ok {
		return "unknown"
	}
	switch k {
	case KindUnauthorized:
		return "unauthorized"
	case KindNotFound:
		return "not_found"
	case KindInvalid:
		return "invalid"
	case KindConflict:
		return "conflict"
	case KindRateLimited:
		return "rate_limited"
	case KindTransient:
		return "transient"
	}
	return "unknown"
}

func (c *Client) observeRequest(op string, apiErr *Error) {
	var err error
	if apiErr != nil {
		err = apiErr
	}
	c.metrics.requests.WithLabelValues(c.org, opLabel(op), KindLabel(err)).Inc()
}

func (c *Client) observeCall(op string, start time.Time, err error) {
	c.metrics.duration.WithLabelValues(c.org, opLabel(op)).Observe(time.Since(start).Seconds())
	if err != nil {
		c.metrics.errors.WithLabelValues(c.org, opLabel(op), KindLabel(err)).Inc()
	}
}

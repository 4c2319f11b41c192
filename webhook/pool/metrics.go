package pool

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metric names of the pool.
const (
	MetricAvailable   = "glaceon_pool_available"
	MetricClaims      = "glaceon_pool_claims_total"
	MetricRefillError = "glaceon_pool_refill_errors_total"
	MetricRefilled    = "glaceon_pool_peers_created_total"
	MetricRotated     = "glaceon_pool_peers_rotated_total"
)

// Results of a claim, the "result" label of MetricClaims.
const (
	// ResultPool: the pod got a pooled peer.
	ResultPool = "pool"
	// ResultFallback: no pooled peer was left; admission calls Fly.
	ResultFallback = "fallback"
	// ResultConflictRetry: another replica claimed the chosen peer first;
	// the claim tried another (counted per retry).
	ResultConflictRetry = "conflict_retry"
)

var (
	available = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricAvailable,
		Help: "Available pooled peers by FlyOrg and region, as last counted by the leader's refill.",
	}, []string{"org", "region"})
	claims = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricClaims,
		Help: "Pool claims at admission by FlyOrg and result (pool, fallback: pool empty and Fly called, conflict_retry: lost a race to another replica and tried another peer).",
	}, []string{"org", "result"})
	refillErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricRefillError,
		Help: "Failed attempts to add a pooled peer, by FlyOrg and kind (fly, rate_limited, kubernetes).",
	}, []string{"org", "kind"})
	refilled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricRefilled,
		Help: "Pooled peers added by the refill, by FlyOrg.",
	}, []string{"org"})
	rotated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricRotated,
		Help: "Pooled peers removed because they were older than the pool's maximum age, by FlyOrg.",
	}, []string{"org"})
)

func init() {
	metrics.Registry.MustRegister(available, claims, refillErrors, refilled, rotated)
}

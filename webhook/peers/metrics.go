package peers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/glaceon/glaceon/flyapi"
)

// Metric names owned by this package. The Fly client wrapper (or admission)
// owns the generic glaceon_fly_api_* series; the Fly error counter here is
// named after the peer controller so the two never collide.
const (
	MetricPeersRemoved     = "glaceon_peers_removed_total"
	MetricPeersOrphaned    = "glaceon_peers_orphaned_total"
	MetricRemovalAbandoned = "glaceon_peer_removal_abandoned_total"
	MetricFlyErrors        = "glaceon_peer_controller_fly_errors_total"
	MetricLastSweep        = "glaceon_peer_sweep_last_success_timestamp_seconds"
)

// Label values.
const (
	resultRemoved = "removed" // removed, or already gone
	resultError   = "error"

	kindFlyPeer = "flypeer"
	kindFly     = "fly"

	opListPeers  = "list_peers"
	opRemovePeer = "remove_peer"
)

var (
	peersRemoved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricPeersRemoved,
		Help: "Fly WireGuard peer removal attempts by the peer controller and sweeper, by result (removed includes already gone; each failed retry counts as an error).",
	}, []string{"result"})
	peersOrphaned = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricPeersOrphaned,
		Help: "Orphans removed by the sweeper: kind=flypeer for FlyPeers no pod claimed, kind=fly for Fly peers of this cluster with no FlyPeer.",
	}, []string{"kind"})
	removalAbandoned = prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricRemovalAbandoned,
		Help: "FlyPeers whose finalizer was released after the removal deadline with the Fly peer still present (left for the sweeper).",
	})
	flyErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricFlyErrors,
		Help: "Failed Fly API calls of the peer controller and sweeper, by operation and error kind.",
	}, []string{"op", "kind"})
	lastSweep = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: MetricLastSweep,
		Help: "Unix time of the last sweep that completed without error.",
	})
)

func init() {
	metrics.Registry.MustRegister(peersRemoved, peersOrphaned, removalAbandoned, flyErrors, lastSweep)
	// Export the zero series so that rate() and alerts work from the start.
	for _, r := range []string{resultRemoved, resultError} {
		peersRemoved.WithLabelValues(r)
	}
	for _, k := range []string{kindFlyPeer, kindFly} {
		peersOrphaned.WithLabelValues(k)
	}
}

// errorKind is a bounded label value for a Fly error.
func errorKind(err error) string {
	switch {
	case flyapi.IsUnauthorized(err):
		return "unauthorized"
	case flyapi.IsNotFound(err):
		return "not_found"
	case flyapi.IsRateLimited(err):
		return "rate_limited"
	case flyapi.IsTransient(err):
		return "transient"
	case flyapi.IsInvalid(err):
		return "invalid"
	default:
		return "other"
	}
}

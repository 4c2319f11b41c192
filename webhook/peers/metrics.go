package peers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metric names owned by this package. The Fly client (flyapi.Metrics) owns
// the glaceon_fly_api_* series, errors by operation and kind included.
const (
	MetricPeersRemoved     = "glaceon_peers_removed_total"
	MetricPeersOrphaned    = "glaceon_peers_orphaned_total"
	MetricRemovalAbandoned = "glaceon_peer_removal_abandoned_total"
	MetricLastSweep        = "glaceon_peer_sweep_last_success_timestamp_seconds"
)

// Label values.
const (
	resultRemoved = "removed" // removed, or already gone
	resultError   = "error"

	kindSecret = "secret"
	kindFly    = "fly"
)

var (
	peersRemoved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricPeersRemoved,
		Help: "Fly WireGuard peer removal attempts by the peer controller and sweeper, by result (removed includes already gone; each failed retry counts as an error).",
	}, []string{"result"})
	peersOrphaned = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricPeersOrphaned,
		Help: "Orphans removed by the sweeper: kind=secret for peer Secrets no pod claimed, kind=fly for Fly peers with no Secret.",
	}, []string{"kind"})
	removalAbandoned = prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricRemovalAbandoned,
		Help: "Peer Secrets whose finalizer was released after the removal deadline with the Fly peer still present (left for the sweeper).",
	})
	lastSweep = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: MetricLastSweep,
		Help: "Unix time of the last sweep that completed without error.",
	})
)

func init() {
	metrics.Registry.MustRegister(peersRemoved, peersOrphaned, removalAbandoned, lastSweep)
	// Export the zero series so that rate() and alerts work from the start.
	for _, r := range []string{resultRemoved, resultError} {
		peersRemoved.WithLabelValues(r)
	}
	for _, k := range []string{kindSecret, kindFly} {
		peersOrphaned.WithLabelValues(k)
	}
}

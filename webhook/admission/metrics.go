package admission

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Outcomes of one admission, the "outcome" label of admissionsTotal.
const (
	outcomeInjected = "injected"
	outcomeSkipped  = "skipped"
	outcomeDenied   = "denied"
	outcomeDryRun   = "dry_run"
	outcomeErrored  = "errored"
)

var (
	admissionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "glaceon_admissions_total",
		Help: "Pod admissions by outcome (injected, skipped, denied, dry_run, errored) and reason.",
	}, []string{"outcome", "reason"})
	admissionDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "glaceon_admission_duration_seconds",
		Help:    "Time to answer a pod admission, Fly API calls included.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
	}, []string{"outcome"})
	peersCreated = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "glaceon_peers_created_total",
		Help: "Fly WireGuard peers created at admission.",
	})
	peersRolledBack = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "glaceon_peers_rolled_back_total",
		Help: "Peers created at admission and removed again because admission failed afterwards, by result (removed, failed: left for the sweeper).",
	}, []string{"result"})
)

func init() {
	// The glaceon_fly_api_* series are the Fly client's (flyapi.Metrics).
	metrics.Registry.MustRegister(admissionsTotal, admissionDuration, peersCreated, peersRolledBack)
}

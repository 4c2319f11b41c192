package certs

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// certExpiry is exported on the manager's /metrics, so an alert can fire
// well before a certificate expires if rotation is stuck.
var certExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "glaceon_webhook_cert_expiry_timestamp_seconds",
	Help: "Expiry (NotAfter, Unix seconds) of the webhook's serving certificate and of its CA, by cert (serving, ca).",
}, []string{"cert"})

func init() {
	metrics.Registry.MustRegister(certExpiry)
}

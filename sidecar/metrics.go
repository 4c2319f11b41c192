package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics holds every glaceon_ series the sidecar exports.
type metrics struct {
	reg *prometheus.Registry

	bytes        *prometheus.CounterVec   // forward, direction
	connsActive  *prometheus.GaugeVec     // forward
	connsTotal   *prometheus.CounterVec   // forward
	dialDuration *prometheus.HistogramVec // forward
	dialErrors   *prometheus.CounterVec   // forward, reason
	dnsLookups   *prometheus.CounterVec   // result
	resolutions  *prometheus.CounterVec   // result
	reconfigs    prometheus.Counter
	ready        prometheus.Gauge
	rejected     *prometheus.CounterVec // server
}

func newMetrics(handshakeAge func() float64) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "glaceon_forward_bytes_total",
			Help: "Bytes copied per forward; direction=out is local client to Fly, in is Fly to local client.",
		}, []string{"forward", "direction"}),
		connsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "glaceon_forward_connections_active",
			Help: "Connections currently open per forward.",
		}, []string{"forward"}),
		connsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "glaceon_forward_connections_total",
			Help: "Connections accepted per forward.",
		}, []string{"forward"}),
		dialDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "glaceon_dial_duration_seconds",
			Help:    "Time to resolve and connect to the target through the tunnel, successful dials only.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"forward"}),
		dialErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "glaceon_dial_errors_total",
			Help: "Failed dials per forward and reason (dns, refused, timeout, handshake, unreachable, other).",
		}, []string{"forward", "reason"}),
		dnsLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "glaceon_dns_lookups_total",
			Help: "Fly DNS lookups through the tunnel by result (ok, nxdomain, error, cached).",
		}, []string{"result"}),
		resolutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "glaceon_wireguard_endpoint_resolutions_total",
			Help: "Resolutions of the WireGuard gateway host name by result (ok, error).",
		}, []string{"result"}),
		reconfigs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "glaceon_wireguard_reconfigurations_total",
			Help: "Times the handshake watchdog re-resolved the endpoint and reconfigured the peer.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "glaceon_ready",
			Help: "1 when /readyz answers ok.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "glaceon_serve_connections_rejected_total",
			Help: "Connections to the health or metrics server reset because too many were open (in all or from one address).",
		}, []string{"server"}),
	}
	handshake := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "glaceon_wireguard_last_handshake_age_seconds",
		Help: "Seconds since the last completed WireGuard handshake; -1 before the first.",
	}, handshakeAge)
	reg.MustRegister(m.bytes, m.connsActive, m.connsTotal, m.dialDuration, m.dialErrors,
		m.dnsLookups, m.resolutions, m.reconfigs, m.ready, m.rejected, handshake,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

package certs

import (
	"errors"
	"fmt"
	"net"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"
)

// Defaults for Options.
const (
	DefaultCAValidity      = 10 * 365 * 24 * time.Hour
	DefaultServingValidity = 365 * 24 * time.Hour
	DefaultCAOverlap       = 24 * time.Hour
	DefaultResyncPeriod    = 10 * time.Minute
	DefaultClusterDomain   = "cluster.local"
	DefaultCAName          = "glaceon-webhook-ca"
)

// Options configures a Manager.
type Options struct {
	// SecretNamespace and SecretName name the Secret holding ca.crt, ca.key,
	// tls.crt and tls.key. It is created when missing. Required.
	SecretNamespace string
	SecretName      string

	// ServiceName is the webhook's Service. The serving certificate covers
	// svc, svc.ns, svc.ns.svc and svc.ns.svc.<ClusterDomain>. Required
	// unless ExtraDNSNames or ExtraIPs is set.
	ServiceName string
	// ServiceNamespace defaults to SecretNamespace.
	ServiceNamespace string
	// ClusterDomain defaults to DefaultClusterDomain.
	ClusterDomain string
	// ExtraDNSNames and ExtraIPs are added to the certificate's SANs, for
	// example 127.0.0.1 when the API server calls a webhook on loopback.
	ExtraDNSNames []string
	ExtraIPs      []net.IP

	// WebhookConfigurations are the MutatingWebhookConfigurations whose
	// every webhook's clientConfig.caBundle is kept equal to ca.crt. With
	// exactly one name the watch is restricted to it (a field selector), so
	// RBAC can be limited with resourceNames. Required.
	WebhookConfigurations []string

	// CAValidity defaults to DefaultCAValidity (10 years). The CA is
	// replaced once a third of its lifetime, or ServingValidity, is left.
	CAValidity time.Duration
	// ServingValidity defaults to DefaultServingValidity (1 year). The
	// serving certificate is replaced once a third of its lifetime is left,
	// or when it no longer covers the configured names.
	ServingValidity time.Duration
	// CAOverlap is how long a replaced CA stays in the bundle after its
	// successor is issued. Defaults to DefaultCAOverlap.
	CAOverlap time.Duration
	// ResyncPeriod bounds the time between two checks of the Secret, so that
	// a renewal is not missed when a timer stalled (a suspended VM). Defaults
	// to DefaultResyncPeriod.
	ResyncPeriod time.Duration
	// CAName is the common name prefix of issued CAs.
	CAName string

	// Clock defaults to the real clock; tests pass a fake one.
	Clock clock.PassiveClock
}

// DNSNames returns the names the serving certificate must cover.
func (o *Options) DNSNames() []string {
	var names []string
	if o.ServiceName != "" {
		ns := o.ServiceNamespace
		if ns == "" {
			ns = o.SecretNamespace
		}
		domain := o.ClusterDomain
		if domain == "" {
			domain = DefaultClusterDomain
		}
		svc := o.ServiceName
		names = append(names, svc, svc+"."+ns, svc+"."+ns+".svc", svc+"."+ns+".svc."+domain)
	}
	return append(names, o.ExtraDNSNames...)
}

func (o *Options) setDefaults() {
	if o.ServiceNamespace == "" {
		o.ServiceNamespace = o.SecretNamespace
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = DefaultClusterDomain
	}
	if o.CAValidity == 0 {
		o.CAValidity = DefaultCAValidity
	}
	if o.ServingValidity == 0 {
		o.ServingValidity = DefaultServingValidity
	}
	if o.CAOverlap == 0 {
		o.CAOverlap = DefaultCAOverlap
	}
	if o.ResyncPeriod == 0 {
		o.ResyncPeriod = DefaultResyncPeriod
	}
	if o.CAName == "" {
		o.CAName = DefaultCAName
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
}

func (o *Options) validate() error {
	var errs []error
	if o.SecretNamespace == "" || o.SecretName == "" {
		errs = append(errs, errors.New("SecretNamespace and SecretName are required"))
	}
	if len(o.WebhookConfigurations) == 0 {
		errs = append(errs, errors.New("at least one webhook configuration name is required"))
	}
	if o.ServiceName == "" && len(o.ExtraDNSNames) == 0 && len(o.ExtraIPs) == 0 {
		errs = append(errs, errors.New("ServiceName, ExtraDNSNames or ExtraIPs is required"))
	}
	for _, n := range o.DNSNames() {
		if msgs := validation.IsDNS1123Subdomain(n); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("DNS name %q: %v", n, msgs))
		}
	}
	// A CA must be able to sign a full-length serving certificate and still
	// have time left before its own rotation.
	if o.ServingValidity <= 0 || o.CAValidity <= 0 || o.ServingValidity > o.CAValidity/2 {
		errs = append(errs, fmt.Errorf("need 0 < ServingValidity (%s) <= CAValidity/2 (%s)", o.ServingValidity, o.CAValidity/2))
	}
	if o.CAOverlap < 0 || o.ResyncPeriod < 0 {
		errs = append(errs, errors.New("CAOverlap and ResyncPeriod must not be negative"))
	}
	return errors.Join(errs...)
}

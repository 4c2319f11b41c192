// Package manager wires glaceon's controller-runtime manager: the pod
// webhook, its serving certificate, the peer lifecycle controllers and the
// MachineProxy controller. `glaceon manager` and the end-to-end tests build
// it through New, so the tests exercise the wiring users run.
package manager

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	ctrladmission "sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/webhook/admission"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/certs"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/machineproxy"
	"github.com/glaceon/glaceon/webhook/peers"
)

// WebhookTimeout is the timeoutSeconds of deploy/webhook's configuration;
// the Fly calls of one admission must finish well within it.
const WebhookTimeout = 15 * time.Second

// Config is everything the manager is told. Zero durations take the
// defaults of the packages they configure.
type Config struct {
	// Namespace of glaceon itself: certificate Secret, org policy, lease.
	Namespace string
	// Inject is the injection config (image, mode, default org/region…).
	Inject inject.Config
	// PeerPrefix starts every peer name this cluster creates.
	PeerPrefix string
	// SweepOrgs are the orgs whose orphaned prefixed peers are removed;
	// empty means the default org.
	SweepOrgs  []string
	FlyTimeout time.Duration
	// GatewayPort is the Fly gateway's UDP port written into wg-quick
	// files (0: 51820).
	GatewayPort int
	// TokenSource names where the Fly token comes from, in denials.
	TokenSource string

	WebhookHost      string
	WebhookPort      int
	WebhookService   string
	WebhookConfig    string // MutatingWebhookConfiguration name
	WebhookExtraSANs []string
	CertSecret       string
	PolicyConfigMap  string

	MetricsAddr string
	HealthAddr  string
	LeaderElect bool

	SweepGrace      time.Duration
	SweepInterval   time.Duration
	RemovalDeadline time.Duration

	Log logr.Logger

	// SkipNameValidation lets one process build several managers (tests):
	// controller names must otherwise be unique per process.
	SkipNameValidation bool

	// AdmissionMiddleware, when set, wraps the pod webhook's handler; tests
	// use it to observe admissions or to fail one after it provisioned.
	AdmissionMiddleware func(ctrladmission.Handler) ctrladmission.Handler
}

// Validate reports every problem with cfg.
func (cfg Config) Validate() error {
	var errs []error
	if err := cfg.Inject.Validate(); err != nil {
		errs = append(errs, err)
	}
	if cfg.FlyTimeout <= 0 || cfg.FlyTimeout >= WebhookTimeout {
		errs = append(errs, fmt.Errorf("fly timeout %s must be positive and under the webhook's %s timeout", cfg.FlyTimeout, WebhookTimeout))
	}
	if cfg.Namespace == "" {
		errs = append(errs, errors.New("namespace is empty"))
	}
	return errors.Join(errs...)
}

// Manager is the built manager and its certificate manager (for readiness).
type Manager struct {
	ctrl.Manager
	Certs *certs.Manager
}

// New builds the manager on restCfg with fly as the Fly API.
func New(restCfg *rest.Config, fly *flyapi.Client, cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The Fly client reports glaceon_fly_api_* to flyapi.DefaultMetrics
	// unless it was given its own; serve them with the manager's metrics.
	if err := flyapi.RegisterMetrics(ctrlmetrics.Registry, nil); err != nil {
		return nil, fmt.Errorf("register Fly API metrics: %w", err)
	}
	certOpts := certs.Options{
		SecretNamespace:       cfg.Namespace,
		SecretName:            cfg.CertSecret,
		ServiceName:           cfg.WebhookService,
		WebhookConfigurations: []string{cfg.WebhookConfig},
	}
	for _, san := range cfg.WebhookExtraSANs {
		if ip := net.ParseIP(san); ip != nil {
			certOpts.ExtraIPs = append(certOpts.ExtraIPs, ip)
		} else {
			certOpts.ExtraDNSNames = append(certOpts.ExtraDNSNames, san)
		}
	}
	certManager, err := certs.New(certOpts)
	if err != nil {
		return nil, err
	}

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, glaceonv1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	// Every admission creates a Secret: client-go's default of 20 requests
	// per second would queue a burst of pods behind each other.
	restCfg = rest.CopyConfig(restCfg)
	restCfg.QPS, restCfg.Burst = 100, 200
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                  scheme,
		Logger:                  cfg.Log,
		Metrics:                 metricsserver.Options{BindAddress: cfg.MetricsAddr},
		HealthProbeBindAddress:  cfg.HealthAddr,
		LeaderElection:          cfg.LeaderElect,
		LeaderElectionID:        "glaceon-manager",
		LeaderElectionNamespace: cfg.Namespace,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    cfg.WebhookHost,
			Port:    cfg.WebhookPort,
			TLSOpts: []func(*tls.Config){certManager.TLSOpts},
		}),
		Controller: config.Controller{SkipNameValidation: ptr.To(cfg.SkipNameValidation)},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			// Only the org policy: never cache the cluster's ConfigMaps.
			&corev1.ConfigMap{}: {Namespaces: map[string]cache.Config{cfg.Namespace: {}}},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	if err := certManager.SetupWithManager(mgr); err != nil {
		return nil, err
	}

	handler, err := admission.NewHandler(scheme, admission.Options{
		Inject:      cfg.Inject,
		Fly:         fly,
		Client:      mgr.GetClient(),
		Policy:      &admission.PolicySource{Reader: mgr.GetClient(), ConfigMap: types.NamespacedName{Namespace: cfg.Namespace, Name: cfg.PolicyConfigMap}, DefaultOrg: cfg.Inject.DefaultOrg},
		FlyTimeout:  cfg.FlyTimeout,
		PeerPrefix:  cfg.PeerPrefix,
		GatewayPort: cfg.GatewayPort,
		TokenSource: cfg.TokenSource,
		Recorder:    mgr.GetEventRecorder("glaceon-webhook"),
		Log:         cfg.Log.WithName("admission"),
	})
	if err != nil {
		return nil, err
	}
	var h ctrladmission.Handler = handler
	if cfg.AdmissionMiddleware != nil {
		h = cfg.AdmissionMiddleware(h)
	}
	mgr.GetWebhookServer().Register(admission.Path, &webhook.Admission{Handler: h})

	sweepOrgs := cfg.SweepOrgs
	if len(sweepOrgs) == 0 && cfg.Inject.DefaultOrg != "" {
		sweepOrgs = []string{cfg.Inject.DefaultOrg}
	}
	err = peers.SetupWithManager(mgr, peers.Options{
		Fly:             fly,
		Prefix:          cfg.PeerPrefix,
		Orgs:            sweepOrgs,
		Grace:           cfg.SweepGrace,
		SweepInterval:   cfg.SweepInterval,
		RemovalDeadline: cfg.RemovalDeadline,
	})
	if err != nil {
		return nil, err
	}
	if err := machineproxy.SetupWithManager(mgr, machineproxy.Options{
		Inject: cfg.Inject,
		// deploy/webhook's namespaceSelector.
		ExcludedNamespaces: []string{"kube-system", cfg.Namespace},
	}); err != nil {
		return nil, err
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	// Ready once the serving certificate is loaded and the caBundle is
	// patched, and the webhook server listens: before that the API server
	// would fail pods closed.
	if err := mgr.AddReadyzCheck("certificate", certManager.ReadyzCheck); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return nil, err
	}
	return &Manager{Manager: mgr, Certs: certManager}, nil
}

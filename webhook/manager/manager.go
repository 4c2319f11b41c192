// Package manager wires glaceon's controller-runtime manager: the pod
// webhook, its serving certificate, the peer lifecycle controllers and the
// MachineProxy controller. `glaceon manager` and the end-to-end tests build
// it through New, so the tests exercise the wiring users run.
package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
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
	"github.com/glaceon/glaceon/webhook/flyorg"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/machineproxy"
	"github.com/glaceon/glaceon/webhook/peers"
	"github.com/glaceon/glaceon/webhook/pool"
)

// WebhookTimeout is the timeoutSeconds of deploy/webhook's configuration;
// the Fly calls of one admission must finish well within it. A test ties
// the two.
const WebhookTimeout = 15 * time.Second

// ExcludedNamespaces are the namespaces deploy/webhook's namespaceSelector
// keeps away from the webhook when glaceon runs in namespace; a test ties
// the two. MachineProxies there are refused, since their pods would get no
// peer.
func ExcludedNamespaces(namespace string) []string {
	return []string{"kube-system", namespace}
}

// AdmissionTimeout bounds one admission, clean-up included: a second under
// WebhookTimeout, so the API server gets glaceon's explanation.
const AdmissionTimeout = WebhookTimeout - time.Second

// Config is everything the manager is told. Zero durations take the
// defaults of the packages they configure.
type Config struct {
	// Namespace of glaceon itself: certificate Secret, FlyOrg token
	// Secrets, lease.
	Namespace string
	// Inject is the injection config (image, mode, default region…).
	// Its DefaultOrg is ignored: the default FlyOrg decides.
	Inject inject.Config
	// PeerPrefix starts every peer name this cluster creates.
	PeerPrefix string
	// MachineProxyTolerations, when not nil, lists the toleration keys a
	// MachineProxy may give its pods ("*": any); nil allows any.
	MachineProxyTolerations []string
	// ClusterName is this cluster's identity in peer names; empty: a short
	// hash of the kube-system namespace's UID.
	ClusterName string
	// Fly is the template of every FlyOrg's Fly client (base URL, gateway
	// port, logger); tokens come from the FlyOrgs' Secrets.
	Fly        flyapi.Options
	FlyTimeout time.Duration
	// GatewayPort is the Fly gateway's UDP port written into wg-quick
	// files (0: 51820).
	GatewayPort int

	WebhookHost      string
	WebhookPort      int
	WebhookService   string
	WebhookConfig    string // MutatingWebhookConfiguration name
	WebhookExtraSANs []string
	CertSecret       string

	MetricsAddr string
	HealthAddr  string
	LeaderElect bool

	SweepGrace      time.Duration
	SweepInterval   time.Duration
	RemovalDeadline time.Duration
	// FlyOrgRecheck is how often each FlyOrg's token is checked again
	// (0: flyorg.DefaultRecheckInterval).
	FlyOrgRecheck time.Duration
	// AllowShortGrace lifts the sweep grace floor (tests only).
	AllowShortGrace bool
	// PoolMaxAge is how long a pooled peer may wait before it is replaced
	// (0: pool.DefaultMaxAge).
	PoolMaxAge time.Duration

	Log logr.Logger

	// SkipNameValidation lets one process build several managers (tests):
	// controller names must otherwise be unique per process.
	SkipNameValidation bool

	// AdmissionMiddleware, when set, wraps the pod webhook's handler; tests
	// use it to observe admissions or to fail one after it provisioned.
	AdmissionMiddleware func(ctrladmission.Handler) ctrladmission.Handler
	// AdmissionTestHook is admission.Options.TestHook (tests only).
	AdmissionTestHook func(step, pod string) error
	// PoolOptions, when set, adjusts the pool's options after New filled
	// them in (tests: refill rate, short max age, refill test hook).
	PoolOptions func(*pool.Options)
	// PeerOptions, when set, adjusts the peer lifecycle's options after New
	// filled them in (tests: no sweeper, fast retries).
	PeerOptions func(*peers.Options)
}

// Validate reports every problem with cfg.
func (cfg Config) Validate() error {
	var errs []error
	if err := cfg.Inject.Validate(); err != nil {
		errs = append(errs, err)
	}
	if limit := AdmissionTimeout - admission.MinCleanupTime; cfg.FlyTimeout <= 0 || cfg.FlyTimeout > limit {
		errs = append(errs, fmt.Errorf("fly timeout %s must be positive and at most %s: the webhook's timeout is %s and the Secret and any clean-up need the rest", cfg.FlyTimeout, limit, WebhookTimeout))
	}
	if cfg.Namespace == "" {
		errs = append(errs, errors.New("namespace is empty"))
	}
	// The cluster identity may be discovered later; check the prefix
	// against the longest one, so a bad prefix fails at start.
	cluster := cfg.ClusterName
	if cluster == "" {
		cluster = strings.Repeat("a", 6)
	}
	if _, err := peers.NewNamer(cfg.PeerPrefix, cluster); err != nil {
		errs = append(errs, err)
	}
	if cfg.PoolMaxAge != 0 {
		if err := pool.ValidateMaxAge(cfg.PoolMaxAge); err != nil {
			errs = append(errs, err)
		}
	}
	if !cfg.AllowShortGrace && cfg.SweepGrace != 0 {
		if err := peers.ValidateGrace(cfg.SweepGrace); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Manager is the built manager and its certificate manager (for readiness).
type Manager struct {
	ctrl.Manager
	Certs *certs.Manager
}

// New builds the manager on restCfg. It reads the kube-system namespace
// (this cluster's identity) unless cfg.ClusterName is set.
func New(restCfg *rest.Config, cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The Fly client reports glaceon_fly_api_* to flyapi.DefaultMetrics
	// unless it was given its own; serve them with the manager's metrics.
	if err := flyapi.RegisterMetrics(ctrlmetrics.Registry, nil); err != nil {
		return nil, fmt.Errorf("register Fly API metrics: %w", err)
	}
	certManager, err := certs.New(certOptions(cfg))
	if err != nil {
		return nil, err
	}
	scheme, err := newScheme()
	if err != nil {
		return nil, err
	}
	mgr, err := newControllerManager(restCfg, cfg, scheme, certManager)
	if err != nil {
		return nil, err
	}
	if err := certManager.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	namer, err := newNamer(mgr, cfg)
	if err != nil {
		return nil, err
	}
	flyOpts := cfg.Fly
	flyOpts.GatewayPort = cfg.GatewayPort
	orgs, err := flyorg.SetupWithManager(mgr, flyorg.Options{Namespace: cfg.Namespace, Fly: flyOpts, RecheckInterval: cfg.FlyOrgRecheck})
	if err != nil {
		return nil, err
	}
	if err := registerAdmission(mgr, cfg, scheme, orgs, namer); err != nil {
		return nil, err
	}
	if err := setupControllers(mgr, cfg, orgs, namer); err != nil {
		return nil, err
	}
	if err := addHealthChecks(mgr, certManager); err != nil {
		return nil, err
	}
	return &Manager{Manager: mgr, Certs: certManager}, nil
}

// certOptions is the webhook serving certificate's configuration; each
// extra SAN is an IP address if it parses as one, a DNS name otherwise.
func certOptions(cfg Config) certs.Options {
	opts := certs.Options{
		SecretNamespace:       cfg.Namespace,
		SecretName:            cfg.CertSecret,
		ServiceName:           cfg.WebhookService,
		WebhookConfigurations: []string{cfg.WebhookConfig},
	}
	for _, san := range cfg.WebhookExtraSANs {
		if ip := net.ParseIP(san); ip != nil {
			opts.ExtraIPs = append(opts.ExtraIPs, ip)
		} else {
			opts.ExtraDNSNames = append(opts.ExtraDNSNames, san)
		}
	}
	return opts
}

// newScheme knows the built-in kinds and glaceon's own.
func newScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, glaceonv1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	return scheme, nil
}

// newControllerManager is the controller-runtime manager: metrics, probes,
// leader election, and the webhook server serving certManager's certificate.
func newControllerManager(restCfg *rest.Config, cfg Config, scheme *runtime.Scheme, certManager *certs.Manager) (ctrl.Manager, error) {
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
		// The manager's cache holds glaceon's own resources only (FlyOrgs,
		// FlyPeers, MachineProxies); the packages keep label-scoped,
		// metadata-only caches of their own. A read of anything else
		// (a Secret, say) fails instead of caching the cluster's.
		Cache: cache.Options{ReaderFailOnMissingInformer: true},
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	return mgr, nil
}

// newNamer names this cluster's peers, discovering the cluster's identity
// when cfg.ClusterName is empty.
func newNamer(mgr ctrl.Manager, cfg Config) (*peers.Namer, error) {
	clusterName := cfg.ClusterName
	if clusterName == "" {
		var err error
		if clusterName, err = peers.DiscoverClusterHash(context.Background(), mgr.GetAPIReader()); err != nil {
			return nil, err
		}
	}
	return peers.NewNamer(cfg.PeerPrefix, clusterName)
}

// registerAdmission serves the pod webhook at admission.Path, claiming
// from the warm pool (whose refill it sets up).
func registerAdmission(mgr ctrl.Manager, cfg Config, scheme *runtime.Scheme, orgs *flyorg.Registry, namer *peers.Namer) error {
	claimer, err := setupPool(mgr, cfg, orgs, namer)
	if err != nil {
		return err
	}
	handler, err := admission.NewHandler(scheme, admission.Options{
		Pool:        claimer,
		Inject:      cfg.Inject,
		Orgs:        orgs,
		Reader:      mgr.GetClient(),
		APIReader:   mgr.GetAPIReader(),
		Client:      mgr.GetClient(),
		Namer:       namer,
		Timeout:     AdmissionTimeout,
		FlyTimeout:  cfg.FlyTimeout,
		GatewayPort: cfg.GatewayPort,
		Recorder:    mgr.GetEventRecorder("glaceon-webhook"),
		Log:         cfg.Log.WithName("admission"),
		TestHook:    cfg.AdmissionTestHook,
	})
	if err != nil {
		return err
	}
	var h ctrladmission.Handler = handler
	if cfg.AdmissionMiddleware != nil {
		h = cfg.AdmissionMiddleware(h)
	}
	mgr.GetWebhookServer().Register(admission.Path, &webhook.Admission{Handler: h})
	return nil
}

// setupControllers adds the peer lifecycle and MachineProxy controllers.
func setupControllers(mgr ctrl.Manager, cfg Config, orgs *flyorg.Registry, namer *peers.Namer) error {
	peerOpts := peers.Options{
		Orgs:            orgs,
		Namer:           namer,
		Grace:           cfg.SweepGrace,
		SweepInterval:   cfg.SweepInterval,
		RemovalDeadline: cfg.RemovalDeadline,
		AllowShortGrace: cfg.AllowShortGrace,
	}
	if cfg.PeerOptions != nil {
		cfg.PeerOptions(&peerOpts)
	}
	if err := peers.SetupWithManager(mgr, peerOpts); err != nil {
		return err
	}
	return machineproxy.SetupWithManager(mgr, machineproxy.Options{
		Inject:                cfg.Inject,
		ExcludedNamespaces:    ExcludedNamespaces(cfg.Namespace),
		AllowedTolerationKeys: cfg.MachineProxyTolerations,
	})
}

// addHealthChecks makes the manager ready once the serving certificate is
// loaded and the caBundle is patched, and the webhook server listens:
// before that the API server would fail pods closed.
func addHealthChecks(mgr ctrl.Manager, certManager *certs.Manager) error {
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("certificate", certManager.ReadyzCheck); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker())
}

// setupPool adds the warm peer pool's refill and returns its Claimer.
func setupPool(mgr ctrl.Manager, cfg Config, orgs *flyorg.Registry, namer *peers.Namer) (*pool.Claimer, error) {
	opts := pool.Options{Orgs: orgs, Namer: namer, GatewayPort: cfg.GatewayPort, MaxAge: cfg.PoolMaxAge, FlyTimeout: cfg.FlyTimeout}
	if cfg.PoolOptions != nil {
		cfg.PoolOptions(&opts)
	}
	return pool.SetupWithManager(mgr, opts)
}

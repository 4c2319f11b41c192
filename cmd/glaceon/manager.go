package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/webhook/admission"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/certs"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/machineproxy"
	"github.com/glaceon/glaceon/webhook/peers"
)

// managerConfig is everything `glaceon manager` is told on its command line.
type managerConfig struct {
	namespace        string
	defaultOrg       string
	defaultRegion    string
	sweepOrgs        string
	sidecarImage     string
	sidecarMode      string
	peerPrefix       string
	flyTimeout       time.Duration
	webhookHost      string
	webhookPort      int
	webhookService   string
	webhookConfig    string
	certSecret       string
	policyConfigMap  string
	tokenSource      string
	metricsAddr      string
	healthAddr       string
	leaderElect      bool
	grace            time.Duration
	sweepInterval    time.Duration
	removalDeadline  time.Duration
	webhookExtraSANs string
}

func runManager(env *cliEnv, args []string) error {
	fs := newFlagSet(env, "manager", "glaceon manager [flags]  (the webhook and the controllers; FLY_API_TOKEN from the environment)")
	var cfg managerConfig
	fs.StringVar(&cfg.namespace, "namespace", envOr("POD_NAMESPACE", "glaceon-system"), "namespace of glaceon itself: certificate Secret, org policy, leader lease")
	fs.StringVar(&cfg.defaultOrg, "default-org", "", "Fly org for pods without glaceon.fly/org")
	fs.StringVar(&cfg.defaultRegion, "default-region", "", "gateway region for pods without glaceon.fly/region (empty: Fly chooses)")
	fs.StringVar(&cfg.sweepOrgs, "sweep-orgs", "", "comma-separated orgs whose orphaned peers (with --peer-prefix) the sweeper removes (default: --default-org)")
	fs.StringVar(&cfg.sidecarImage, "sidecar-image", inject.DefaultSidecarImage, "glaceon-sidecar image injected into pods")
	fs.StringVar(&cfg.sidecarMode, "sidecar-mode", string(inject.SidecarModeNative), "native (init container with restartPolicy Always, Kubernetes 1.29+) or classic")
	fs.StringVar(&cfg.peerPrefix, "peer-prefix", "k8s-", "prefix of the Fly peer names this cluster creates; give each cluster sharing an org its own, e.g. k8s-prod-")
	fs.DurationVar(&cfg.flyTimeout, "fly-timeout", 10*time.Second, "deadline of the Fly calls of one admission; keep it under the webhook's timeoutSeconds (15s)")
	fs.StringVar(&cfg.webhookHost, "webhook-host", "", "address the webhook server binds (default all)")
	fs.IntVar(&cfg.webhookPort, "webhook-port", 9443, "webhook server port")
	fs.StringVar(&cfg.webhookService, "webhook-service", "glaceon-webhook", "Service in front of the webhook (the certificate's names)")
	fs.StringVar(&cfg.webhookConfig, "webhook-config", "glaceon", "MutatingWebhookConfiguration whose caBundle the manager keeps")
	fs.StringVar(&cfg.webhookExtraSANs, "webhook-extra-sans", "", "extra comma-separated DNS names or IPs for the serving certificate (e.g. 127.0.0.1 out of cluster)")
	fs.StringVar(&cfg.certSecret, "cert-secret", "glaceon-webhook-tls", "Secret holding the webhook's CA and serving certificate")
	fs.StringVar(&cfg.policyConfigMap, "org-policy", "glaceon-org-policy", "ConfigMap with the namespace → org policy (policy.yaml)")
	fs.StringVar(&cfg.tokenSource, "token-source", "secret glaceon-system/fly-api-token", "where FLY_API_TOKEN comes from, named in denial messages")
	fs.StringVar(&cfg.metricsAddr, "metrics-addr", ":8080", "Prometheus metrics address (0 disables)")
	fs.StringVar(&cfg.healthAddr, "health-addr", ":8081", "/healthz and /readyz address")
	fs.BoolVar(&cfg.leaderElect, "leader-elect", false, "elect a leader for the controllers (the webhook serves on every replica)")
	fs.DurationVar(&cfg.grace, "sweep-grace", peers.DefaultGrace, "how long a peer may stay unclaimed before the sweeper removes it")
	fs.DurationVar(&cfg.sweepInterval, "sweep-interval", peers.DefaultSweepInterval, "time between two sweeps")
	fs.DurationVar(&cfg.removalDeadline, "removal-deadline", peers.DefaultRemovalDeadline, "how long a deleted peer Secret waits for a failing Fly API")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log := zap.New(zap.UseFlagOptions(&zapOpts), zap.WriteTo(env.stderr))
	ctrl.SetLogger(log)

	ctx := ctrl.SetupSignalHandler()
	mgr, ready, err := newManager(ctx, cfg, log)
	if err != nil {
		return err
	}
	log.Info("starting manager", "version", flyapi.Version, "namespace", cfg.namespace, "defaultOrg", cfg.defaultOrg)
	go func() {
		if err := ready.WaitForReady(ctx); err == nil {
			log.Info("webhook certificate ready")
		}
	}()
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	return nil
}

// newManager builds the controller-runtime manager with the webhook, the
// certificate manager and the peer controllers.
func newManager(_ context.Context, cfg managerConfig, log logr.Logger) (ctrl.Manager, *certs.Manager, error) {
	injectCfg := inject.DefaultConfig()
	injectCfg.DefaultOrg, injectCfg.DefaultRegion = cfg.defaultOrg, cfg.defaultRegion
	injectCfg.Image, injectCfg.Mode = cfg.sidecarImage, inject.SidecarMode(cfg.sidecarMode)
	if err := injectCfg.Validate(); err != nil {
		return nil, nil, usagef("manager: %v", err)
	}
	if cfg.flyTimeout <= 0 || cfg.flyTimeout >= 15*time.Second {
		return nil, nil, usagef("manager: --fly-timeout %s must be positive and under the webhook's 15s timeout", cfg.flyTimeout)
	}
	flyOpts, err := flyapi.OptionsFromEnv()
	if err != nil {
		return nil, nil, err
	}
	flyOpts.Logger = log.WithName("flyapi")
	fly, err := flyapi.New(flyOpts)
	if err != nil {
		return nil, nil, err
	}
	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("manager: find the cluster (in-cluster config or KUBECONFIG): %w", err)
	}
	// Every admission creates a Secret: client-go's default of 20 requests
	// per second would queue a burst of pods behind each other.
	restCfg.QPS, restCfg.Burst = 100, 200

	certOpts := certs.Options{
		SecretNamespace:       cfg.namespace,
		SecretName:            cfg.certSecret,
		ServiceName:           cfg.webhookService,
		WebhookConfigurations: []string{cfg.webhookConfig},
	}
	for _, san := range splitList(cfg.webhookExtraSANs) {
		if ip := net.ParseIP(san); ip != nil {
			certOpts.ExtraIPs = append(certOpts.ExtraIPs, ip)
		} else {
			certOpts.ExtraDNSNames = append(certOpts.ExtraDNSNames, san)
		}
	}
	certManager, err := certs.New(certOpts)
	if err != nil {
		return nil, nil, usagef("manager: %v", err)
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	if err := glaceonv1alpha1.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: cfg.metricsAddr},
		HealthProbeBindAddress:  cfg.healthAddr,
		LeaderElection:          cfg.leaderElect,
		LeaderElectionID:        "glaceon-manager",
		LeaderElectionNamespace: cfg.namespace,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    cfg.webhookHost,
			Port:    cfg.webhookPort,
			TLSOpts: []func(*tls.Config){certManager.TLSOpts},
		}),
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			// Only the org policy: never cache the cluster's ConfigMaps.
			&corev1.ConfigMap{}: {Namespaces: map[string]cache.Config{cfg.namespace: {}}},
		}},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("manager: %w", err)
	}
	if err := certManager.SetupWithManager(mgr); err != nil {
		return nil, nil, err
	}

	handler, err := admission.NewHandler(scheme, admission.Options{
		Inject:      injectCfg,
		Fly:         fly,
		Client:      mgr.GetClient(),
		Policy:      &admission.PolicySource{Reader: mgr.GetClient(), ConfigMap: types.NamespacedName{Namespace: cfg.namespace, Name: cfg.policyConfigMap}, DefaultOrg: cfg.defaultOrg},
		FlyTimeout:  cfg.flyTimeout,
		PeerPrefix:  cfg.peerPrefix,
		GatewayPort: flyOpts.GatewayPort,
		TokenSource: cfg.tokenSource,
		Recorder:    mgr.GetEventRecorder("glaceon-webhook"),
		Log:         log.WithName("admission"),
	})
	if err != nil {
		return nil, nil, usagef("manager: %v", err)
	}
	mgr.GetWebhookServer().Register(admission.Path, &webhook.Admission{Handler: handler})

	sweepOrgs := splitList(cfg.sweepOrgs)
	if len(sweepOrgs) == 0 && cfg.defaultOrg != "" {
		sweepOrgs = []string{cfg.defaultOrg}
	}
	if err := peers.SetupWithManager(mgr, peers.Options{
		Fly:             fly,
		Prefix:          cfg.peerPrefix,
		Orgs:            sweepOrgs,
		Grace:           cfg.grace,
		SweepInterval:   cfg.sweepInterval,
		RemovalDeadline: cfg.removalDeadline,
	}); err != nil {
		return nil, nil, err
	}

	if err := machineproxy.SetupWithManager(mgr, machineproxy.Options{Inject: injectCfg}); err != nil {
		return nil, nil, err
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, nil, err
	}
	// Ready once the serving certificate is loaded and the caBundle is
	// patched, and the webhook server listens: before that the API server
	// would fail pods closed.
	if err := mgr.AddReadyzCheck("certificate", certManager.ReadyzCheck); err != nil {
		return nil, nil, err
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return nil, nil, err
	}
	return mgr, certManager, nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

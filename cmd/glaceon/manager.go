package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/version"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/manager"
	"github.com/glaceon/glaceon/webhook/peers"
)

func runManager(env *cliEnv, args []string) error {
	cfg, zapOpts, err := parseManagerFlags(env, args)
	if err != nil {
		return err
	}
	log := zap.New(zap.UseFlagOptions(&zapOpts), zap.WriteTo(env.stderr))
	ctrl.SetLogger(log)
	cfg.Log = log
	return startManager(cfg, log)
}

// parseManagerFlags turns the command line into the manager's config.
func parseManagerFlags(env *cliEnv, args []string) (manager.Config, zap.Options, error) {
	fs := newFlagSet(env, "manager", "glaceon manager [flags]  (the webhook and the controllers; FLY_API_TOKEN from the environment)")
	cfg := manager.Config{Inject: inject.DefaultConfig()}
	var sidecarMode, sweepOrgs, extraSANs string
	fs.StringVar(&cfg.Namespace, "namespace", envOr("POD_NAMESPACE", "glaceon-system"), "namespace of glaceon itself: certificate Secret, org policy, leader lease")
	fs.StringVar(&cfg.Inject.DefaultOrg, "default-org", "", "Fly org for pods without glaceon.fly/org")
	fs.StringVar(&cfg.Inject.DefaultRegion, "default-region", "", "gateway region for pods without glaceon.fly/region (empty: Fly chooses)")
	fs.StringVar(&sweepOrgs, "sweep-orgs", "", "comma-separated orgs whose orphaned peers (with --peer-prefix) the sweeper removes (default: --default-org)")
	fs.StringVar(&cfg.Inject.Image, "sidecar-image", inject.DefaultSidecarImage, "glaceon-sidecar image injected into pods")
	fs.StringVar(&cfg.Inject.HealthListenHost, "sidecar-listen-host", cfg.Inject.HealthListenHost, "address the sidecar's health server (and MachineProxy listeners) bind: :: for every address family the pod has (IPv4, IPv6-only, dual-stack), 0.0.0.0 for IPv4 only")
	var metricsPort int
	fs.IntVar(&metricsPort, "sidecar-metrics-port", 0, "port of the sidecar's /metrics on the pod IP (0: not served; any pod that reaches the pod IP can read them)")
	fs.StringVar(&sidecarMode, "sidecar-mode", string(inject.SidecarModeNative), "native (init container with restartPolicy Always, Kubernetes 1.29+) or classic")
	fs.StringVar(&cfg.PeerPrefix, "peer-prefix", "k8s-", "prefix of the Fly peer names this cluster creates; give each cluster sharing an org its own, e.g. k8s-prod-")
	fs.DurationVar(&cfg.FlyTimeout, "fly-timeout", 10*time.Second, "deadline of the Fly calls of one admission; keep it under the webhook's timeoutSeconds (15s)")
	fs.StringVar(&cfg.WebhookHost, "webhook-host", "", "address the webhook server binds (default all)")
	fs.IntVar(&cfg.WebhookPort, "webhook-port", 9443, "webhook server port")
	fs.StringVar(&cfg.WebhookService, "webhook-service", "glaceon-webhook", "Service in front of the webhook (the certificate's names)")
	fs.StringVar(&cfg.WebhookConfig, "webhook-config", "glaceon", "MutatingWebhookConfiguration whose caBundle the manager keeps")
	fs.StringVar(&extraSANs, "webhook-extra-sans", "", "extra comma-separated DNS names or IPs for the serving certificate (e.g. 127.0.0.1 out of cluster)")
	fs.StringVar(&cfg.CertSecret, "cert-secret", "glaceon-webhook-tls", "Secret holding the webhook's CA and serving certificate")
	fs.StringVar(&cfg.PolicyConfigMap, "org-policy", "glaceon-org-policy", "ConfigMap with the namespace → org policy (policy.yaml)")
	fs.StringVar(&cfg.TokenSource, "token-source", "secret glaceon-system/fly-api-token", "where FLY_API_TOKEN comes from, named in denial messages")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", ":8080", "Prometheus metrics address (0 disables)")
	fs.StringVar(&cfg.HealthAddr, "health-addr", ":8081", "/healthz and /readyz address")
	fs.BoolVar(&cfg.LeaderElect, "leader-elect", false, "elect a leader for the controllers (the webhook serves on every replica)")
	fs.DurationVar(&cfg.SweepGrace, "sweep-grace", peers.DefaultGrace, "how long a peer may stay unclaimed before the sweeper removes it")
	fs.DurationVar(&cfg.SweepInterval, "sweep-interval", peers.DefaultSweepInterval, "time between two sweeps")
	fs.DurationVar(&cfg.RemovalDeadline, "removal-deadline", peers.DefaultRemovalDeadline, "how long a deleted peer Secret waits for a failing Fly API")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return cfg, zapOpts, err
	}
	cfg.Inject.Mode = inject.SidecarMode(sidecarMode)
	if metricsPort < 0 || metricsPort > 65535 {
		return cfg, zapOpts, usagef("manager: --sidecar-metrics-port %d: give 0 (off) or a port from 1 to 65535", metricsPort)
	}
	cfg.Inject.MetricsPort = int32(metricsPort)
	cfg.SweepOrgs, cfg.WebhookExtraSANs = splitList(sweepOrgs), splitList(extraSANs)
	if err := cfg.Validate(); err != nil {
		return cfg, zapOpts, usagef("manager: %v", err)
	}
	return cfg, zapOpts, nil
}

func startManager(cfg manager.Config, log logr.Logger) error {
	flyOpts, err := flyapi.OptionsFromEnv()
	if err != nil {
		return err
	}
	flyOpts.Logger = log.WithName("flyapi")
	fly, err := flyapi.New(flyOpts)
	if err != nil {
		return err
	}
	cfg.GatewayPort = flyOpts.GatewayPort
	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("manager: find the cluster (in-cluster config or KUBECONFIG): %w", err)
	}
	mgr, err := manager.New(restCfg, fly, cfg)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}

	ctx := ctrl.SetupSignalHandler()
	log.Info("starting manager", "version", version.Version, "namespace", cfg.Namespace, "defaultOrg", cfg.Inject.DefaultOrg, "fly", flyOpts.BaseURL)
	go func() {
		if err := mgr.Certs.WaitForReady(ctx); err == nil {
			log.Info("webhook certificate ready")
		}
	}()
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	return nil
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

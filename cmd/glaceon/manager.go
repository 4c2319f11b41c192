package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/version"
	"github.com/glaceon/glaceon/webhook/flyorg"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/manager"
	"github.com/glaceon/glaceon/webhook/peers"
)

func runManager(env *cliEnv, args []string) error {
	fs := newFlagSet(env, "manager", "glaceon manager [flags]  (the webhook and the controllers; Fly tokens come from the FlyOrgs' Secrets)")
	cfg := manager.Config{Inject: inject.DefaultConfig()}
	var sidecarMode, extraSANs string
	fs.StringVar(&cfg.Namespace, "namespace", envOr("POD_NAMESPACE", "glaceon-system"), "namespace of glaceon itself: certificate Secret, FlyOrg token Secrets, leader lease")
	fs.StringVar(&cfg.Inject.DefaultRegion, "default-region", "", "gateway region for pods without glaceon.fly/region whose FlyOrg has no spec.defaultRegion (empty: Fly chooses)")
	fs.StringVar(&cfg.Inject.Image, "sidecar-image", inject.DefaultSidecarImage, "glaceon-sidecar image injected into pods")
	fs.StringVar(&sidecarMode, "sidecar-mode", string(inject.SidecarModeNative), "native (init container with restartPolicy Always, Kubernetes 1.29+) or classic")
	fs.StringVar(&cfg.PeerPrefix, "peer-prefix", "k8s-", "prefix of the Fly peer names this cluster creates (<prefix><namespace>-<pod>-<cluster>-<random>)")
	fs.StringVar(&cfg.ClusterName, "cluster-name", "", "this cluster's identity in peer names: 1-16 lower-case letters and digits, unique among clusters sharing a Fly org (default: a hash of the kube-system namespace's UID)")
	fs.DurationVar(&cfg.FlyTimeout, "fly-timeout", 10*time.Second, "deadline of the Fly call of one admission; at most 12s, under the webhook's timeoutSeconds (15s)")
	fs.StringVar(&cfg.WebhookHost, "webhook-host", "", "address the webhook server binds (default all)")
	fs.IntVar(&cfg.WebhookPort, "webhook-port", 9443, "webhook server port")
	fs.StringVar(&cfg.WebhookService, "webhook-service", "glaceon-webhook", "Service in front of the webhook (the certificate's names)")
	fs.StringVar(&cfg.WebhookConfig, "webhook-config", "glaceon", "MutatingWebhookConfiguration whose caBundle the manager keeps")
	fs.StringVar(&extraSANs, "webhook-extra-sans", "", "extra comma-separated DNS names or IPs for the serving certificate (e.g. 127.0.0.1 out of cluster)")
	fs.StringVar(&cfg.CertSecret, "cert-secret", "glaceon-webhook-tls", "Secret holding the webhook's CA and serving certificate")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", ":8080", "Prometheus metrics address (0 disables)")
	fs.StringVar(&cfg.HealthAddr, "health-addr", ":8081", "/healthz and /readyz address")
	fs.BoolVar(&cfg.LeaderElect, "leader-elect", false, "elect a leader for the controllers (the webhook serves on every replica)")
	fs.DurationVar(&cfg.SweepGrace, "sweep-grace", peers.DefaultGrace, "how long a FlyPeer may stay unclaimed by a pod before the sweeper removes it (at least 1m; measured on the API server's clock)")
	fs.DurationVar(&cfg.SweepInterval, "sweep-interval", peers.DefaultSweepInterval, "time between two sweeps")
	fs.DurationVar(&cfg.FlyOrgRecheck, "flyorg-recheck", flyorg.DefaultRecheckInterval, "how often each FlyOrg's token and org are checked again")
	fs.DurationVar(&cfg.RemovalDeadline, "removal-deadline", peers.DefaultRemovalDeadline, "how long a deleted FlyPeer waits for a failing Fly API before the sweeper takes over")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg.Inject.Mode = inject.SidecarMode(sidecarMode)
	cfg.WebhookExtraSANs = splitList(extraSANs)
	if err := cfg.Validate(); err != nil {
		return usagef("manager: %v", err)
	}
	log := zap.New(zap.UseFlagOptions(&zapOpts), zap.WriteTo(env.stderr))
	ctrl.SetLogger(log)
	cfg.Log = log

	// FLY_API_BASE_URL and FLY_WG_GATEWAY_PORT still apply (tests, other
	// API endpoints); tokens come from the FlyOrgs, never the environment.
	flyOpts, err := flyEndpointFromEnv()
	if err != nil {
		return err
	}
	flyOpts.Logger = log.WithName("flyapi")
	cfg.Fly = flyOpts
	cfg.GatewayPort = flyOpts.GatewayPort
	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("manager: find the cluster (in-cluster config or KUBECONFIG): %w", err)
	}
	mgr, err := manager.New(restCfg, cfg)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}

	ctx := ctrl.SetupSignalHandler()
	log.Info("starting manager", "version", version.Version, "namespace", cfg.Namespace, "fly", flyOpts.BaseURL)
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

// flyEndpointFromEnv reads FLY_API_BASE_URL and FLY_WG_GATEWAY_PORT; a
// token in the environment is not used (each FlyOrg names its Secret).
func flyEndpointFromEnv() (flyapi.Options, error) {
	opts := flyapi.Options{BaseURL: strings.TrimSpace(os.Getenv(flyapi.EnvBaseURL))}
	if v := strings.TrimSpace(os.Getenv(flyapi.EnvGatewayPort)); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return opts, fmt.Errorf("invalid %s %q: use a UDP port number in 1..65535", flyapi.EnvGatewayPort, v)
		}
		opts.GatewayPort = n
	}
	// Fail at start on a bad URL, not at the first FlyOrg.
	probe := opts
	probe.Token = "FlyV1 fm2_probe"
	if _, err := flyapi.New(probe); err != nil {
		return opts, fmt.Errorf("%s: %w", flyapi.EnvBaseURL, err)
	}
	return opts, nil
}

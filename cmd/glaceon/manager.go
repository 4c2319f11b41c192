package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/version"
	"github.com/glaceon/glaceon/webhook/flyorg"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/manager"
	"github.com/glaceon/glaceon/webhook/peers"
	"github.com/glaceon/glaceon/webhook/pool"
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
	fs := newFlagSet(env, "manager", "glaceon manager [flags]  (the webhook and the controllers; Fly tokens come from the FlyOrgs' Secrets)")
	cfg := manager.Config{Inject: inject.DefaultConfig()}
	var sidecarMode, extraSANs string
	fs.StringVar(&cfg.Namespace, "namespace", envOr("POD_NAMESPACE", "glaceon-system"), "namespace of glaceon itself: certificate Secret, FlyOrg token Secrets, leader lease")
	fs.StringVar(&cfg.Inject.DefaultRegion, "default-region", "", "gateway region for pods without glaceon.fly/region whose FlyOrg has no spec.defaultRegion (empty: Fly chooses)")
	fs.StringVar(&cfg.Inject.Image, "sidecar-image", inject.DefaultSidecarImage, "glaceon-sidecar image injected into pods")
	fs.StringVar(&cfg.Inject.HealthListenHost, "sidecar-listen-host", cfg.Inject.HealthListenHost, "address the sidecar's health server (and MachineProxy listeners) bind: :: for every address family the pod has (IPv4, IPv6-only, dual-stack), 0.0.0.0 for IPv4 only")
	var metricsPort int
	fs.IntVar(&metricsPort, "sidecar-metrics-port", 0, "port of the sidecar's /metrics on the pod IP (0: not served; any pod that reaches the pod IP can read them)")
	fs.StringVar(&sidecarMode, "sidecar-mode", string(inject.SidecarModeNative), "native (init container with restartPolicy Always, Kubernetes 1.29+) or classic")
	fs.StringVar(&cfg.Inject.Transport, "sidecar-transport", "", "default transport of every sidecar: auto, udp or websocket (glaceon.fly/transport and MachineProxy spec.transport override it; default: the sidecar's, auto)")
	fs.Func("sidecar-image-pull-policy", "imagePullPolicy of the injected sidecar: Always, IfNotPresent or Never (default IfNotPresent)", func(s string) error {
		switch p := corev1.PullPolicy(s); p {
		case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
			cfg.Inject.ImagePullPolicy = p
			return nil
		}
		return fmt.Errorf("%q is not Always, IfNotPresent or Never", s)
	})
	fs.Var(resourceListFlag{&cfg.Inject.Resources.Requests}, "sidecar-requests", "resource requests of the injected sidecar, e.g. cpu=10m,memory=32Mi (default "+formatResourceList(cfg.Inject.Resources.Requests)+")")
	fs.Var(resourceListFlag{&cfg.Inject.Resources.Limits}, "sidecar-limits", "resource limits of the injected sidecar, e.g. memory=128Mi; empty for none (default "+formatResourceList(cfg.Inject.Resources.Limits)+")")
	fs.StringVar(&cfg.PeerPrefix, "peer-prefix", peers.DefaultPrefix, "prefix of the Fly peer names this cluster creates (<prefix><namespace>-<pod>-<cluster>-<random>)")
	fs.StringVar(&cfg.ClusterName, "cluster-name", "", "this cluster's identity in peer names: 1-16 lower-case letters and digits, unique among clusters sharing a Fly org (default: a hash of the kube-system namespace's UID)")
	fs.DurationVar(&cfg.FlyTimeout, "fly-timeout", 10*time.Second, "deadline of the Fly call of one admission; at most 12s, under the webhook's timeoutSeconds (15s)")
	fs.Func("machineproxy-allowed-tolerations", "comma-separated toleration keys a MachineProxy may give its pods (* for any; empty for none). Default: any. The manager creates the proxy pods, so this is what keeps a MachineProxy's author off tainted nodes", func(v string) error {
		cfg.MachineProxyTolerations = append([]string{}, splitList(v)...)
		return nil
	})
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
	fs.DurationVar(&cfg.PoolMaxAge, "pool-max-age", pool.DefaultMaxAge, "how long a pooled peer (FlyOrg spec.pool) may wait unclaimed before it is replaced by a fresh one (at least 1h)")
	fs.DurationVar(&cfg.RemovalDeadline, "removal-deadline", peers.DefaultRemovalDeadline, "how long a deleted FlyPeer waits for a failing Fly API before the sweeper takes over")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return cfg, zapOpts, err
	}
	cfg.Inject.Mode = inject.SidecarMode(sidecarMode)
	if err := checkRequestsWithinLimits(cfg.Inject.Resources); err != nil {
		return cfg, zapOpts, usagef("manager: %v", err)
	}
	if metricsPort < 0 || metricsPort > 65535 {
		return cfg, zapOpts, usagef("manager: --sidecar-metrics-port %d: give 0 (off) or a port from 1 to 65535", metricsPort)
	}
	cfg.Inject.MetricsPort = int32(metricsPort)
	cfg.WebhookExtraSANs = splitList(extraSANs)
	if err := cfg.Validate(); err != nil {
		return cfg, zapOpts, usagef("manager: %v", err)
	}
	return cfg, zapOpts, nil
}

func startManager(cfg manager.Config, log logr.Logger) error {
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
	log.Info("starting manager", "version", version.Version, "commit", version.Commit, "namespace", cfg.Namespace, "fly", flyOpts.BaseURL)
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

// resourceListFlag is a flag holding a resource list as
// name=quantity,… (cpu, memory, ephemeral-storage); empty means none.
type resourceListFlag struct{ list *corev1.ResourceList }

func (f resourceListFlag) String() string {
	if f.list == nil {
		return ""
	}
	return formatResourceList(*f.list)
}

func (f resourceListFlag) Set(s string) error {
	l, err := parseResourceList(s)
	if err != nil {
		return err
	}
	*f.list = l
	return nil
}

// sidecarResourceNames are the resources a sidecar's requests and limits may name.
var sidecarResourceNames = []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage}

// parseResourceList parses "cpu=10m,memory=32Mi".
func parseResourceList(s string) (corev1.ResourceList, error) {
	l := corev1.ResourceList{}
	for _, part := range splitList(s) {
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || v == "" {
			return nil, fmt.Errorf("%q: want name=quantity, e.g. memory=128Mi", part)
		}
		name := corev1.ResourceName(k)
		known := false
		for _, n := range sidecarResourceNames {
			known = known || n == name
		}
		if !known {
			return nil, fmt.Errorf("%q: resource %q is not cpu, memory or ephemeral-storage", part, k)
		}
		if _, dup := l[name]; dup {
			return nil, fmt.Errorf("%q: %s given twice", s, k)
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("%q: %q is not a quantity such as 10m, 32Mi or 1: %w", part, v, err)
		}
		if q.Sign() < 0 {
			return nil, fmt.Errorf("%q: a quantity cannot be negative", part)
		}
		l[name] = q
	}
	return l, nil
}

// formatResourceList prints a resource list the way parseResourceList reads it.
func formatResourceList(l corev1.ResourceList) string {
	parts := make([]string, 0, len(l))
	for name, q := range l {
		parts = append(parts, string(name)+"="+q.String())
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// checkRequestsWithinLimits catches what the API server would refuse on
// every injected pod: a request above its limit.
func checkRequestsWithinLimits(r corev1.ResourceRequirements) error {
	for name, req := range r.Requests {
		if lim, ok := r.Limits[name]; ok && req.Cmp(lim) > 0 {
			return fmt.Errorf("--sidecar-requests %s=%s is above --sidecar-limits %s=%s; raise the limit or lower the request", name, req.String(), name, lim.String())
		}
	}
	return nil
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

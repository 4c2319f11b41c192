package inject

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/glaceon/glaceon/flyapi/version"
)

// SidecarMode selects how the sidecar runs in the pod.
type SidecarMode string

const (
	// SidecarModeNative injects the sidecar as the first init container with
	// restartPolicy Always (Kubernetes 1.29+): the app starts only once the
	// tunnel is ready, and Jobs complete.
	SidecarModeNative SidecarMode = "native"
	// SidecarModeClassic injects the sidecar as the first regular container,
	// for clusters without native sidecars. Apps must retry until the tunnel
	// is up, and a Job's pod never completes while the sidecar runs.
	SidecarModeClassic SidecarMode = "classic"
	// SidecarModePeerOnly gives the pod its own peer and nothing else: the
	// pod's own volume named PeerVolumeName gets the peer's Secret, and no
	// container, alias, env var or sysctl is added. It is for pods that run
	// glaceon-sidecar themselves, such as MachineProxy replicas (shared mode,
	// listening on the pod IP). Only a pod annotation selects it; it is never
	// a default.
	SidecarModePeerOnly SidecarMode = "peer-only"
)

// SidecarRepository is the repository of the glaceon-sidecar image. Release
// builds (hack/release) set it to the registry they push to, with
// -ldflags "-X github.com/glaceon/glaceon/webhook/inject.SidecarRepository=…".
var SidecarRepository = "ghcr.io/glaceon/glaceon-sidecar"

// DefaultSidecarImage is the image DefaultConfig uses: the sidecar of this
// binary's own version, so a manager never injects a sidecar of another
// release by default.
var DefaultSidecarImage = SidecarRepository + ":" + ImageTag(version.Version)

// ImageTag turns a version into a valid image tag
// ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}): other characters become '-' ('_'
// first), and an empty version is "dev". hack/release tags images with it.
func ImageTag(version string) string {
	var sb strings.Builder
	for i, r := range version {
		ok := r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && (r == '.' || r == '-'))
		switch {
		case ok:
		case i == 0:
			r = '_'
		default:
			r = '-'
		}
		sb.WriteRune(r)
		if sb.Len() >= 128 {
			break
		}
	}
	if sb.Len() == 0 {
		return "dev"
	}
	return sb.String()
}

// Config is the operator's side of injection: the same for every pod.
type Config struct {
	// Image and ImagePullPolicy of the sidecar container.
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// Resources of the sidecar container.
	Resources corev1.ResourceRequirements
	// HealthPort serves /healthz and /readyz. The kubelet probes it on the
	// pod IP, so it listens on HealthListenHost, not on loopback.
	HealthPort int32
	// HealthListenHost is the address the health server (and a
	// MachineProxy's listeners) bind: "::" (the default) is every address
	// family the pod has, so IPv4, IPv6-only and dual-stack clusters all
	// work; "0.0.0.0" is IPv4 only.
	HealthListenHost string
	// MetricsPort serves the sidecar's /metrics on HealthListenHost; 0 (the
	// default) serves them nowhere. Any pod that can reach the pod IP can
	// read them, and they name the Fly hosts the pod reaches: set it only
	// where a scrape is configured (and a NetworkPolicy limits who scrapes).
	MetricsPort int32
	// Mode is the default sidecar mode; glaceon.fly/inject-mode overrides it.
	Mode SidecarMode
	// Transport is the default --transport of every sidecar (auto, udp,
	// websocket); glaceon.fly/transport and MachineProxy spec.transport
	// override it. "" leaves the sidecar's own default (auto).
	Transport string
	// DefaultOrg and DefaultRegion apply when a pod does not set
	// glaceon.fly/org or glaceon.fly/region. DefaultRegion may be empty
	// (Fly then picks the gateway).
	DefaultOrg    string
	DefaultRegion string
	// RunAsUser and RunAsGroup are the non-root identity of the sidecar.
	RunAsUser  int64
	RunAsGroup int64
	// SecretMountPath is where the peer Secret is mounted (read-only); the
	// wg-quick file is SecretMountPath/SecretKeyWGConfig.
	SecretMountPath string
}

// DefaultConfig returns the configuration glaceon ships with. DefaultOrg is
// empty: the operator must set it, or every pod must carry glaceon.fly/org.
func DefaultConfig() Config {
	return Config{
		Image:           DefaultSidecarImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("32Mi"),
			},
			// No CPU limit: throttling a tunnel only adds latency. The
			// memory limit bounds a runaway sidecar.
			Limits: corev1.ResourceList{
				corev1.ResourceMemory: resource.MustParse("128Mi"),
			},
		},
		HealthPort:       9901,
		HealthListenHost: "::",
		Mode:             SidecarModeNative,
		RunAsUser:        65532,
		RunAsGroup:       65532,
		SecretMountPath:  "/etc/glaceon",
	}
}

// SidecarSecurityContext is the glaceon-sidecar container's security
// context: Pod Security "restricted" (non-root, read-only root filesystem,
// no capabilities, no privilege escalation, RuntimeDefault seccomp).
func (c Config) SidecarSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsUser:                ptr.To(c.RunAsUser),
		RunAsGroup:               ptr.To(c.RunAsGroup),
		RunAsNonRoot:             ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// SidecarServeArgs are the sidecar's --health-addr and, when MetricsPort
// is set, --metrics-addr flags.
func (c Config) SidecarServeArgs() []string {
	args := []string{"--health-addr", net.JoinHostPort(c.HealthListenHost, strconv.Itoa(int(c.HealthPort)))}
	if c.MetricsPort != 0 {
		args = append(args, "--metrics-addr", net.JoinHostPort(c.HealthListenHost, strconv.Itoa(int(c.MetricsPort))))
	}
	return args
}

// SidecarServePorts are the container ports of SidecarServeArgs.
func (c Config) SidecarServePorts() []corev1.ContainerPort {
	ports := []corev1.ContainerPort{{Name: HealthPortName, ContainerPort: c.HealthPort, Protocol: corev1.ProtocolTCP}}
	if c.MetricsPort != 0 {
		ports = append(ports, corev1.ContainerPort{Name: MetricsPortName, ContainerPort: c.MetricsPort, Protocol: corev1.ProtocolTCP})
	}
	return ports
}

// sidecarPort names the port if the sidecar serves on it, else "".
func (c Config) sidecarPort(port int32) string {
	switch {
	case port == c.HealthPort:
		return "health"
	case c.MetricsPort != 0 && port == c.MetricsPort:
		return "metrics"
	}
	return ""
}

// WGConfigPath is the path of the wg-quick file inside the sidecar.
func (c Config) WGConfigPath() string {
	return path.Join(c.SecretMountPath, SecretKeyWGConfig)
}

// Validate reports every problem with the configuration, for start-up checks.
func (c Config) Validate() error {
	var errs []error
	if c.Image == "" {
		errs = append(errs, errors.New("sidecar image is empty"))
	}
	if c.Transport != "" {
		if fe := ValidateTransport(c.Transport, field.NewPath("transport")); len(fe) > 0 {
			errs = append(errs, fmt.Errorf("sidecar transport %q is not one of %s", c.Transport, strings.Join(Transports, ", ")))
		}
	}
	switch c.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, fmt.Errorf("image pull policy %q is not Always, IfNotPresent or Never", c.ImagePullPolicy))
	}
	if c.HealthPort < 1 || c.HealthPort > 65535 {
		errs = append(errs, fmt.Errorf("health port %d is not in 1-65535", c.HealthPort))
	}
	if a, err := netip.ParseAddr(c.HealthListenHost); err != nil || !a.IsUnspecified() {
		// The pod IP is not known at admission: only a wildcard works.
		errs = append(errs, fmt.Errorf("health listen host %q is not :: (every address family) or 0.0.0.0 (IPv4 only)", c.HealthListenHost))
	}
	if c.MetricsPort < 0 || c.MetricsPort > 65535 || (c.MetricsPort != 0 && c.MetricsPort == c.HealthPort) {
		errs = append(errs, fmt.Errorf("metrics port %d is not 0 (off) or a port in 1-65535 other than the health port", c.MetricsPort))
	}
	switch c.Mode {
	case SidecarModeNative, SidecarModeClassic:
	default:
		errs = append(errs, fmt.Errorf("sidecar mode %q is not %q or %q", c.Mode, SidecarModeNative, SidecarModeClassic))
	}
	if c.DefaultOrg != "" {
		if fe := ValidateOrgSlug(c.DefaultOrg, nil); len(fe) > 0 {
			errs = append(errs, fmt.Errorf("default org %q: %s", c.DefaultOrg, fe[0].Detail))
		}
	}
	if c.DefaultRegion != "" {
		if fe := ValidateRegion(c.DefaultRegion, nil); len(fe) > 0 {
			errs = append(errs, fmt.Errorf("default region %q: %s", c.DefaultRegion, fe[0].Detail))
		}
	}
	if c.RunAsUser <= 0 {
		errs = append(errs, fmt.Errorf("run-as user %d is not a non-root uid", c.RunAsUser))
	}
	if c.RunAsGroup <= 0 {
		errs = append(errs, fmt.Errorf("run-as group %d is not a non-root gid", c.RunAsGroup))
	}
	if !path.IsAbs(c.SecretMountPath) || path.Clean(c.SecretMountPath) != c.SecretMountPath || c.SecretMountPath == "/" {
		errs = append(errs, fmt.Errorf("secret mount path %q is not a clean absolute directory other than /", c.SecretMountPath))
	}
	return errors.Join(errs...)
}

// Peer names the Fly WireGuard peer of one pod and the Secret holding its
// wg-quick file. It never holds key material.
type Peer struct {
	// Name is the Fly peer name (≤ 63 chars, [a-z0-9-]).
	Name string
	// SecretName is the Secret in the pod's namespace with key SecretKeyWGConfig.
	SecretName string
}

// PlaceholderPeer is the Peer for dry runs and offline injection: the
// injected shape is the same as at admission, with names that say no peer
// exists.
func PlaceholderPeer() Peer {
	return Peer{Name: PlaceholderPeerName, SecretName: PlaceholderSecretName}
}

// Validate checks the peer and Secret names.
func (p Peer) Validate() error {
	var errs []error
	if len(p.Name) > 63 || !dnsLabelPattern.MatchString(p.Name) {
		errs = append(errs, fmt.Errorf("peer name %q is not 1-63 characters of [a-z0-9-]", p.Name))
	}
	if strings.HasPrefix(p.Name, "interactive-") {
		// flyctl treats interactive-* peers as its own and may remove them.
		errs = append(errs, fmt.Errorf("peer name %q must not start with interactive-", p.Name))
	}
	for _, msg := range validation.IsDNS1123Subdomain(p.SecretName) {
		errs = append(errs, fmt.Errorf("secret name %q: %s", p.SecretName, msg))
	}
	return errors.Join(errs...)
}

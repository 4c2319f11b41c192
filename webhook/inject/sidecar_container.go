package inject

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/glaceon/glaceon/flyapi/target"
)

// SidecarContainer is what differs between the glaceon-sidecar containers
// glaceon builds: the one injected into annotated pods and the one of each
// MachineProxy replica. Build turns it into the container; a new sidecar
// flag is added there, once.
type SidecarContainer struct {
	// Name is the container name.
	Name string
	// Forwards are the --forward flags, in order.
	Forwards []target.Forward
	// Ports are declared before the health port (a MachineProxy's Service
	// targets them by name).
	Ports []corev1.ContainerPort
	// Resources, when set, replace Config.Resources.
	Resources *corev1.ResourceRequirements
	// StartupProbe holds the pod's app containers back (native mode) until
	// the tunnel has a handshake, Fly DNS answers and every listener is up.
	StartupProbe bool
	// Native makes the container a native sidecar: an init container with
	// restartPolicy Always.
	Native bool
	// Transport is --transport (auto, udp, websocket); "" means
	// Config.Transport, and when that is "" too, the sidecar's default
	// (no flag).
	Transport string
}

// SidecarArgs is the sidecar's command line for cfg, forwards and
// transport ("" for cfg.Transport, then the sidecar's default).
func SidecarArgs(cfg Config, forwards []target.Forward, transport string) []string {
	args := []string{"--wg-config", cfg.WGConfigPath()}
	for _, f := range forwards {
		args = append(args, "--forward", f.String())
	}
	args = append(args, cfg.SidecarServeArgs()...)
	if transport == "" {
		transport = cfg.Transport
	}
	if transport != "" {
		args = append(args, "--transport", transport)
	}
	return args
}

// HealthForward is a forward that listens on cfg's health listen address
// (the pod IP) at port, as MachineProxy replicas do. cfg must be valid
// (Config.Validate checks HealthListenHost).
func HealthForward(cfg Config, port int32, t target.Target) target.Forward {
	addr, _ := netip.ParseAddr(cfg.HealthListenHost)
	return target.Forward{Listen: netip.AddrPortFrom(addr, uint16(port)), Host: t.Host, Port: t.Port}
}

// Build returns the container.
func (s SidecarContainer) Build(cfg Config) corev1.Container {
	resources := cfg.Resources.DeepCopy()
	if s.Resources != nil {
		resources = s.Resources.DeepCopy()
	}
	ports := append(append([]corev1.ContainerPort(nil), s.Ports...), cfg.SidecarServePorts()...)
	c := corev1.Container{
		Name:            s.Name,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Args:            SidecarArgs(cfg, s.Forwards, s.Transport),
		Ports:           ports,
		Resources:       *resources,
		VolumeMounts: []corev1.VolumeMount{{
			Name:      PeerVolumeName,
			MountPath: cfg.SecretMountPath,
			ReadOnly:  true,
		}},
		// Readiness gates Services and (classic mode) the pod's Ready.
		ReadinessProbe: HealthProbe("/readyz", 5, 3),
		LivenessProbe:  HealthProbe("/healthz", 10, 3),
		// The sidecar exits with a one-line reason on bad config; this puts
		// it in the pod status.
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext:          cfg.SidecarSecurityContext(),
	}
	if s.StartupProbe {
		// 120 × 1 s leaves room for a new peer to reach the gateway before
		// the kubelet restarts the sidecar.
		c.StartupProbe = HealthProbe("/readyz", 1, 120)
	}
	if s.Native {
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	}
	return c
}

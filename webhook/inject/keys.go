package inject

import "github.com/glaceon/glaceon/flyapi/target"

// Names that form glaceon's contract with users, with the other parts of
// glaceon (admission, peer controller, sidecar) and with existing clusters.
// They are API: renaming one strands pods and Secrets created before.
const (
	// AnnotationTarget opts a pod in and lists the Fly targets it reaches:
	// comma-separated "app", "host:port" or "http://host[:port]" entries.
	AnnotationTarget = "glaceon.fly/target"
	// AnnotationOrg is the Fly organization slug the pod's peer belongs to.
	// Optional: the webhook's default org applies when it is absent.
	AnnotationOrg = "glaceon.fly/org"
	// AnnotationRegion is the Fly WireGuard gateway region (e.g. "iad").
	// Optional: the webhook's default region, or Fly's choice, applies.
	AnnotationRegion = "glaceon.fly/region"
	// AnnotationInjectMode overrides the sidecar mode for one pod:
	// "native" (init container with restartPolicy Always) or "classic".
	AnnotationInjectMode = "glaceon.fly/inject-mode"
	// AnnotationTransport is how the sidecar reaches the Fly gateway:
	// "auto" (UDP, falling back to WebSocket over TCP 443), "udp" or
	// "websocket". Optional: the sidecar's default (auto) applies.
	AnnotationTransport = "glaceon.fly/transport"

	// AnnotationPeer is written by the webhook: the name of the pod's Fly
	// WireGuard peer. Never a key or a token.
	AnnotationPeer = "glaceon.fly/peer"
	// AnnotationInjected is written by the webhook. Its presence marks the pod
	// as injected (Inject then leaves it alone); its value ("v1-<hash>")
	// identifies the injected sidecar configuration.
	AnnotationInjected = "glaceon.fly/injected"

	// LabelInjected is set to "true" on injected pods so that controllers can
	// watch only those pods (annotations cannot be selected on).
	LabelInjected = "glaceon.fly/injected"

	// LabelManagedBy and ManagedByValue mark the peer Secrets glaceon owns.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy on glaceon's objects.
	ManagedByValue = "glaceon"
	// LabelPeerName on a peer Secret holds the Fly peer name (≤ 63 chars,
	// [a-z0-9-], so it is a valid label value).
	LabelPeerName = "glaceon.fly/peer"
	// LabelPeerOrg on a peer Secret holds the Fly org slug of the peer.
	LabelPeerOrg = "glaceon.fly/org"

	// FinalizerPeerCleanup on a peer Secret makes the peer controller remove
	// the Fly peer before the Secret disappears.
	FinalizerPeerCleanup = "glaceon.fly/peer-cleanup"

	// SecretKeyWGConfig is the key of the wg-quick file in the peer Secret,
	// and so the file name under Config.SecretMountPath.
	SecretKeyWGConfig = "fly0.conf"

	// SidecarContainerName is the name of the injected container. Reserved:
	// a pod that already has a container of this name is denied.
	SidecarContainerName = "glaceon-sidecar"
	// PeerVolumeName is the name of the injected Secret volume. Reserved.
	PeerVolumeName = "glaceon-peer"
	// HealthPortName names the sidecar's health port (≤ 15 chars).
	HealthPortName = "glaceon-health"
	// MetricsPortName names the sidecar's metrics port, when it has one.
	MetricsPortName = "glaceon-metric"

	// EnvTargetPrefix starts the env vars that tell app containers where each
	// target listens: GLACEON_TARGET_<i>_ADDR and GLACEON_TARGET_<i>_HOST.
	EnvTargetPrefix = "GLACEON_TARGET_"

	// SysctlUnprivilegedPortStart is the namespaced ("safe", allowed by Pod
	// Security restricted) sysctl that lets the non-root sidecar bind ports
	// below 1024.
	SysctlUnprivilegedPortStart = "net.ipv4.ip_unprivileged_port_start"
	// kernelUnprivilegedPortStart is the kernel default of that sysctl.
	kernelUnprivilegedPortStart = 1024

	// MaxTargets bounds the targets of one pod; each distinct host takes one
	// loopback address from 127.0.0.2 on. The grammar enforces it.
	MaxTargets = target.MaxTargets

	// PlaceholderPeerName and PlaceholderSecretName stand in for the real peer
	// in dry runs and offline injection, where no peer is created.
	PlaceholderPeerName = "placeholder"
	// PlaceholderSecretName is the Secret name paired with PlaceholderPeerName.
	PlaceholderSecretName = "glaceon-peer-placeholder"

	// annotationKubectlDefaultContainer keeps `kubectl logs/exec` pointed at
	// the app when the sidecar is the first regular container (classic mode).
	annotationKubectlDefaultContainer = "kubectl.kubernetes.io/default-container"

	// injectedMarkerVersion prefixes AnnotationInjected's value; bump it when
	// the injected shape changes incompatibly.
	injectedMarkerVersion = "v1"
)

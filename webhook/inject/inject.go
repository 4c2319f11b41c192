package inject

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/glaceon/glaceon/flyapi/target"
)

// Secret volume file modes. The sidecar runs as a non-root uid, while the
// kubelet writes Secret files owned by root. With a pod fsGroup the kubelet
// gives that group read access (and the sidecar is in it), so 0400 works.
// Without one, a 0400 file is unreadable to the sidecar; 0444 is then used.
// It exposes nothing: only the sidecar container mounts the volume, and the
// sidecar process is the only process in that container.
const (
	secretFileModeWithFSGroup    int32 = 0o400
	secretFileModeWithoutFSGroup int32 = 0o444
)

// firstLoopbackAddr is the address of the first target host; 127.0.0.1 is
// left to the app.
var firstLoopbackAddr = netip.AddrFrom4([4]byte{127, 0, 0, 2})

// InvalidPodError is returned by Inject when the pod cannot be injected. It
// carries every reason, for an admission denial.
type InvalidPodError struct {
	Errors field.ErrorList
}

// Error joins all reasons.
func (e *InvalidPodError) Error() string {
	return "pod cannot be injected: " + e.Errors.ToAggregate().Error()
}

// Inject returns a copy of pod with the glaceon sidecar, its Secret volume,
// loopback host aliases, target env vars and status annotations added. It
// does no I/O and is deterministic. An already injected pod (IsInjected) is
// returned unchanged. A pod that cannot be injected yields an
// *InvalidPodError listing every reason (the same list Validate returns).
func Inject(pod *corev1.Pod, cfg Config, peer Peer) (*corev1.Pod, error) {
	if pod == nil {
		return nil, errors.New("inject: nil pod")
	}
	if IsInjected(pod) {
		return pod.DeepCopy(), nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid injection config: %w", err)
	}
	if err := peer.Validate(); err != nil {
		return nil, fmt.Errorf("invalid peer: %w", err)
	}
	p, errs := newPlan(pod, cfg)
	if len(errs) > 0 {
		return nil, &InvalidPodError{Errors: errs}
	}
	out := pod.DeepCopy()
	p.apply(out, cfg, peer)
	return out, nil
}

// Validate returns every reason the pod cannot be injected with cfg: bad
// annotations, no org to use, hostNetwork, reserved names, port, env, host
// alias and sysctl conflicts. Each error names the field and the fix. An
// already injected pod is valid: Inject leaves it unchanged.
func Validate(pod *corev1.Pod, cfg Config) field.ErrorList {
	if pod == nil {
		return field.ErrorList{field.Required(nil, "no pod in the request")}
	}
	if IsInjected(pod) {
		return nil
	}
	_, errs := newPlan(pod, cfg)
	return errs
}

// listener is one sidecar forward: a loopback address and the target's port.
type listener struct {
	target Target
	addr   netip.Addr
}

// listen is the LISTEN half of --forward, e.g. 127.0.0.2:80.
func (l listener) listen() netip.AddrPort {
	return netip.AddrPortFrom(l.addr, l.target.Port)
}

// plan is everything Inject adds, worked out (and checked) before the pod is
// touched.
type plan struct {
	mode      SidecarMode
	transport string                // --transport, "" for the sidecar's default
	listeners []listener            // one per target, annotation order
	hostAddrs map[string]netip.Addr // one loopback address per distinct host
	aliases   []corev1.HostAlias    // hostAddrs in first-appearance order
	// unprivilegedPortStart is the sysctl value to add, or nil if none is
	// needed or the pod already sets a low enough value.
	unprivilegedPortStart *int
}

// newPlan parses the pod's request and works out the injection, collecting
// every reason it cannot be done.
func newPlan(pod *corev1.Pod, cfg Config) (plan, field.ErrorList) {
	req, errs := parsePodAnnotations(pod)
	req = req.WithDefaults(cfg)
	if _, set := pod.Annotations[AnnotationOrg]; !set && req.Org == "" {
		errs = append(errs, field.Required(annotationsPath.Key(AnnotationOrg),
			"the webhook has no default org; set it to your Fly org slug (see `fly orgs list`)"))
	}

	p := plan{mode: req.Mode, transport: req.Transport, hostAddrs: make(map[string]netip.Addr)}
	next := firstLoopbackAddr
	for _, t := range req.Targets {
		addr, ok := p.hostAddrs[t.Host]
		if !ok {
			addr, next = next, next.Next()
			p.hostAddrs[t.Host] = addr
			p.aliases = append(p.aliases, corev1.HostAlias{IP: addr.String(), Hostnames: []string{t.Host}})
		}
		p.listeners = append(p.listeners, listener{target: t, addr: addr})
		if name := cfg.sidecarPort(int32(t.Port)); name != "" {
			errs = append(errs, field.Invalid(annotationsPath.Key(AnnotationTarget), t.String(),
				fmt.Sprintf("port %d is the sidecar's %s port; ask the cluster admin to move the %s port (webhook config) to reach this target", t.Port, name, name)))
		}
	}

	specPath := field.NewPath("spec")
	if pod.Spec.OS != nil && pod.Spec.OS.Name == corev1.Windows {
		errs = append(errs, field.Forbidden(specPath.Child("os", "name"),
			"the glaceon sidecar is a Linux container; remove glaceon.fly/target from Windows pods"))
	}
	if pod.Spec.HostNetwork {
		errs = append(errs, field.Forbidden(specPath.Child("hostNetwork"),
			"glaceon's loopback listeners would land on the node's network; remove hostNetwork or reach the app through a MachineProxy"))
	}
	if p.mode == SidecarModePeerOnly {
		// The pod runs the sidecar itself: only its peer volume matters.
		if peerVolume(pod) == nil {
			errs = append(errs, field.Required(specPath.Child("volumes"),
				fmt.Sprintf("peer-only mode binds the pod's Secret volume named %s; add it (secret: {secretName: %s})", PeerVolumeName, PlaceholderSecretName)))
		}
		return p, errs
	}
	errs = append(errs, p.checkContainers(pod, cfg, specPath)...)
	for i, v := range pod.Spec.Volumes {
		if v.Name == PeerVolumeName {
			errs = append(errs, field.Invalid(specPath.Child("volumes").Index(i).Child("name"), v.Name,
				"the name is reserved for glaceon's peer Secret volume; rename this volume"))
		}
	}
	errs = append(errs, p.checkHostAliases(pod, specPath.Child("hostAliases"))...)
	errs = append(errs, p.planSysctl(pod, specPath.Child("securityContext", "sysctls"))...)
	return p, errs
}

// checkContainers reports reserved container names, ports the sidecar needs
// and env vars it sets, in every existing container.
func (p *plan) checkContainers(pod *corev1.Pod, cfg Config, specPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	reservedEnv := make(map[string]bool)
	for _, e := range p.targetEnv() {
		reservedEnv[e.Name] = true
	}
	check := func(c *corev1.Container, path *field.Path) {
		if c.Name == SidecarContainerName {
			errs = append(errs, field.Invalid(path.Child("name"), c.Name,
				"the name is reserved for glaceon's sidecar; rename this container"))
		}
		for j, port := range c.Ports {
			if port.Protocol != "" && port.Protocol != corev1.ProtocolTCP {
				continue
			}
			portPath := path.Child("ports").Index(j).Child("containerPort")
			if name := cfg.sidecarPort(port.ContainerPort); name != "" {
				errs = append(errs, field.Invalid(portPath, port.ContainerPort,
					fmt.Sprintf("the port is the glaceon sidecar's %s port; move the app to another port, or ask the cluster admin to move the %s port", name, name)))
				continue
			}
			for _, l := range p.listeners {
				if int32(l.target.Port) == port.ContainerPort {
					errs = append(errs, field.Invalid(portPath, port.ContainerPort,
						fmt.Sprintf("the sidecar listens on %s for target %s, and an app listening on all addresses cannot share the port; move the app to another port or drop the target",
							l.listen(), l.target)))
					break
				}
			}
		}
		for k, e := range c.Env {
			if reservedEnv[e.Name] {
				errs = append(errs, field.Invalid(path.Child("env").Index(k).Child("name"), e.Name,
					"glaceon sets this variable to a target's local address; rename it"))
			}
		}
	}
	for i := range pod.Spec.InitContainers {
		check(&pod.Spec.InitContainers[i], specPath.Child("initContainers").Index(i))
	}
	for i := range pod.Spec.Containers {
		check(&pod.Spec.Containers[i], specPath.Child("containers").Index(i))
	}
	for i := range pod.Spec.EphemeralContainers {
		c := corev1.Container(pod.Spec.EphemeralContainers[i].EphemeralContainerCommon)
		check(&c, specPath.Child("ephemeralContainers").Index(i))
	}
	return errs
}

// checkHostAliases reports existing entries that map one of our host names
// elsewhere, or give one of our loopback addresses to another name.
func (p *plan) checkHostAliases(pod *corev1.Pod, aliasesPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	hostByAddr := make(map[netip.Addr]string, len(p.hostAddrs))
	for host, addr := range p.hostAddrs {
		hostByAddr[addr] = host
	}
	for i, alias := range pod.Spec.HostAliases {
		aliasAddr, _ := netip.ParseAddr(alias.IP) // the API server validates it
		for j, hostname := range alias.Hostnames {
			ours, isOurs := p.hostAddrs[hostname]
			switch {
			case isOurs && ours != aliasAddr:
				errs = append(errs, field.Invalid(aliasesPath.Index(i).Child("hostnames").Index(j), hostname,
					fmt.Sprintf("glaceon maps this host to the sidecar at %s, but this entry maps it to %s; remove the entry", ours, alias.IP)))
			case !isOurs && hostByAddr[aliasAddr] != "":
				errs = append(errs, field.Invalid(aliasesPath.Index(i).Child("ip"), alias.IP,
					fmt.Sprintf("the address is the sidecar's listener for %s, so %q would reach that target; use another address",
						hostByAddr[aliasAddr], hostname)))
			}
		}
	}
	return errs
}

// planSysctl works out net.ipv4.ip_unprivileged_port_start: a non-root
// sidecar binds ports below it only if the pod lowers it to the lowest
// target port. A pod value above that is a conflict glaceon will not
// override.
func (p *plan) planSysctl(pod *corev1.Pod, sysctlsPath *field.Path) field.ErrorList {
	var lowest *listener
	for i := range p.listeners {
		if lowest == nil || p.listeners[i].target.Port < lowest.target.Port {
			lowest = &p.listeners[i]
		}
	}
	if lowest == nil {
		return nil
	}
	needed := int(lowest.target.Port)
	if sc := pod.Spec.SecurityContext; sc != nil {
		for i, s := range sc.Sysctls {
			if s.Name != SysctlUnprivilegedPortStart {
				continue
			}
			valuePath := sysctlsPath.Index(i).Child("value")
			current, err := strconv.Atoi(s.Value)
			if err != nil {
				return field.ErrorList{field.Invalid(valuePath, s.Value, "not a port number; set it to a number, or remove it and glaceon sets it")}
			}
			if current > needed {
				return field.ErrorList{field.Invalid(valuePath, s.Value,
					fmt.Sprintf("the non-root sidecar must listen on port %d for target %s; set it to %d or lower, or remove it and glaceon sets it",
						needed, lowest.target, needed))}
			}
			return nil // the pod's own value already lets the sidecar bind
		}
	}
	if needed < kernelUnprivilegedPortStart {
		p.unprivilegedPortStart = &needed
	}
	return nil
}

// targetEnv is GLACEON_TARGET_<i>_ADDR and _HOST for every target.
func (p *plan) targetEnv() []corev1.EnvVar {
	env := make([]corev1.EnvVar, 0, 2*len(p.listeners))
	for i, l := range p.listeners {
		prefix := EnvTargetPrefix + strconv.Itoa(i)
		env = append(env,
			corev1.EnvVar{Name: prefix + "_ADDR", Value: l.listen().String()},
			corev1.EnvVar{Name: prefix + "_HOST", Value: l.target.Host},
		)
	}
	return env
}

// peerVolume returns the pod's Secret volume named PeerVolumeName, or nil.
func peerVolume(pod *corev1.Pod) *corev1.Volume {
	for i := range pod.Spec.Volumes {
		if v := &pod.Spec.Volumes[i]; v.Name == PeerVolumeName && v.Secret != nil {
			return v
		}
	}
	return nil
}

// markInjected writes the status annotations and the label.
func markInjected(out *corev1.Pod, peer Peer, marker string) {
	if out.Annotations == nil {
		out.Annotations = make(map[string]string)
	}
	out.Annotations[AnnotationPeer] = peer.Name
	out.Annotations[AnnotationInjected] = marker
	if out.Labels == nil {
		out.Labels = make(map[string]string)
	}
	out.Labels[LabelInjected] = "true"
}

// apply mutates out, a copy of the validated pod.
func (p *plan) apply(out *corev1.Pod, cfg Config, peer Peer) {
	if p.mode == SidecarModePeerOnly {
		peerVolume(out).Secret.SecretName = peer.SecretName
		markInjected(out, peer, injectedMarker(corev1.Container{Name: string(SidecarModePeerOnly)}, nil))
		return
	}
	sidecar := p.sidecarContainer(cfg)

	// Our variables go first so that the app's own env can refer to them
	// with $(GLACEON_TARGET_0_ADDR). Done before the sidecar is added.
	env := p.targetEnv()
	for _, containers := range [][]corev1.Container{out.Spec.InitContainers, out.Spec.Containers} {
		for i := range containers {
			containers[i].Env = append(append([]corev1.EnvVar(nil), env...), containers[i].Env...)
		}
	}

	if out.Annotations == nil {
		out.Annotations = make(map[string]string)
	}
	if p.mode == SidecarModeNative {
		// First, so that the tunnel is up before any other init container.
		out.Spec.InitContainers = append([]corev1.Container{sidecar}, out.Spec.InitContainers...)
	} else {
		if _, set := out.Annotations[annotationKubectlDefaultContainer]; !set && len(out.Spec.Containers) > 0 {
			out.Annotations[annotationKubectlDefaultContainer] = out.Spec.Containers[0].Name
		}
		out.Spec.Containers = append([]corev1.Container{sidecar}, out.Spec.Containers...)
	}

	mode := secretFileModeWithoutFSGroup
	if sc := out.Spec.SecurityContext; sc != nil && sc.FSGroup != nil {
		mode = secretFileModeWithFSGroup
	}
	out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{
		Name: PeerVolumeName,
		VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  peer.SecretName,
			DefaultMode: ptr.To(mode),
		}},
	})

	out.Spec.HostAliases = append(out.Spec.HostAliases, p.aliases...)

	if p.unprivilegedPortStart != nil {
		if out.Spec.SecurityContext == nil {
			out.Spec.SecurityContext = &corev1.PodSecurityContext{}
		}
		out.Spec.SecurityContext.Sysctls = append(out.Spec.SecurityContext.Sysctls, corev1.Sysctl{
			Name:  SysctlUnprivilegedPortStart,
			Value: strconv.Itoa(*p.unprivilegedPortStart),
		})
	}

	markInjected(out, peer, injectedMarker(sidecar, p.aliases))
}

// sidecarContainer builds the injected glaceon-sidecar container.
func (p *plan) sidecarContainer(cfg Config) corev1.Container {
	forwards := make([]target.Forward, len(p.listeners))
	for i, l := range p.listeners {
		forwards[i] = target.Forward{Listen: l.listen(), Host: l.target.Host, Port: l.target.Port}
	}
	return SidecarContainer{
		Name:         SidecarContainerName,
		Forwards:     forwards,
		StartupProbe: true,
		Native:       p.mode == SidecarModeNative,
		Transport:    p.transport,
	}.Build(cfg)
}

// HealthProbe probes the sidecar's health server by port name
// (HealthPortName). The kubelet connects to the pod IP, which is why the
// health server does not listen on loopback.
func HealthProbe(path string, periodSeconds, failureThreshold int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path,
			Port: intstr.FromString(HealthPortName),
		}},
		TimeoutSeconds:   1,
		PeriodSeconds:    periodSeconds,
		FailureThreshold: failureThreshold,
	}
}

// injectedMarker is AnnotationInjected's value: a version and a hash of the
// injected sidecar and aliases (not of the peer, so a dry run shows the
// same value as the real admission).
func injectedMarker(sidecar corev1.Container, aliases []corev1.HostAlias) string {
	shape, err := json.Marshal(struct {
		Sidecar corev1.Container   `json:"sidecar"`
		Aliases []corev1.HostAlias `json:"aliases"`
	}{sidecar, aliases})
	if err != nil {
		// Marshalling plain API structs cannot fail; keep the marker anyway.
		return injectedMarkerVersion
	}
	sum := sha256.Sum256(shape)
	return injectedMarkerVersion + "-" + hex.EncodeToString(sum[:6])
}

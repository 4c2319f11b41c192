package machineproxy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/glaceon/glaceon/flyapi/target"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
)

// Pure builders of the objects a MachineProxy wants. No I/O: the
// reconciler applies what they return, and the tests compare it.

// defaultReplicas applies when spec.replicas is unset (the API server
// defaults it too; this covers objects that bypassed defaulting).
const defaultReplicas int32 = 2

// proxyTarget is one target as the proxy serves it.
type proxyTarget struct {
	target      inject.Target
	servicePort int32
	listenPort  int32
	portName    string // names both the container and the Service port
}

// proxyTargets parses spec.target with the annotation grammar and assigns
// the ports: spec.port (or the target's own port) for a single target,
// the target's own port for each of several. It reports what the CRD's
// CEL rules cannot (two targets on one Service port) and anything a CRD
// older than this controller let through.
func proxyTargets(mp *glaceonv1alpha1.MachineProxy) ([]proxyTarget, field.ErrorList) {
	specPath := field.NewPath("spec")
	targets, errs := inject.ParseTargets(mp.Spec.Target, specPath.Child("target"))
	if len(errs) > 0 {
		return nil, errs
	}
	if mp.Spec.Port != nil && len(targets) > 1 {
		return nil, field.ErrorList{field.Forbidden(specPath.Child("port"),
			"port sets the Service port of a single target; with several targets each is served on its own port, so remove port")}
	}
	out := make([]proxyTarget, len(targets))
	byPort := make(map[int32]inject.Target, len(targets))
	for i, t := range targets {
		port := int32(t.Port)
		if mp.Spec.Port != nil {
			port = *mp.Spec.Port
		}
		if other, taken := byPort[port]; taken {
			errs = append(errs, field.Invalid(specPath.Child("target"), mp.Spec.Target,
				fmt.Sprintf("%s and %s would both be served on Service port %d; each target needs its own port, so split them into two MachineProxies", other, t, port)))
			continue
		}
		byPort[port] = t
		out[i] = proxyTarget{
			target:      t,
			servicePort: port,
			listenPort:  firstListenPort + int32(i),
			portName:    "target-" + strconv.Itoa(i),
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// validate returns the targets to serve, or every reason the spec cannot
// be served: proxyTargets' and a namespace the webhook does not serve.
func validate(mp *glaceonv1alpha1.MachineProxy, opts Options) ([]proxyTarget, field.ErrorList) {
	targets, errs := proxyTargets(mp)
	if slices.Contains(opts.ExcludedNamespaces, mp.Namespace) {
		errs = append(errs, field.Forbidden(field.NewPath("metadata", "namespace"),
			fmt.Sprintf("glaceon's webhook does not serve namespace %s, so proxy pods here would get no Fly peer; create the MachineProxy in another namespace (e.g. flycast)", mp.Namespace)))
	}
	errs = append(errs, forbiddenTolerations(mp, opts)...)
	if len(errs) > 0 {
		return nil, errs
	}
	return targets, nil
}

// forbiddenTolerations refuses the tolerations whose key the manager's
// allow list (Options.AllowedTolerationKeys) does not name.
func forbiddenTolerations(mp *glaceonv1alpha1.MachineProxy, opts Options) field.ErrorList {
	if opts.AllowedTolerationKeys == nil || slices.Contains(opts.AllowedTolerationKeys, "*") {
		return nil
	}
	var errs field.ErrorList
	for i, t := range mp.Spec.Tolerations {
		if slices.Contains(opts.AllowedTolerationKeys, t.Key) && t.Key != "" {
			continue
		}
		what := fmt.Sprintf("toleration key %q", t.Key)
		if t.Key == "" {
			what = "a toleration without a key (it tolerates every taint)"
		}
		errs = append(errs, field.Forbidden(field.NewPath("spec", "tolerations").Index(i).Child("key"),
			fmt.Sprintf("%s is not allowed for MachineProxy pods in this cluster (the manager's --machineproxy-allowed-tolerations is %q); remove it or ask a cluster admin to allow it",
				what, strings.Join(opts.AllowedTolerationKeys, ","))))
	}
	return errs
}

// replicasOf is spec.replicas with its default.
func replicasOf(mp *glaceonv1alpha1.MachineProxy) int32 {
	return ptr.Deref(mp.Spec.Replicas, defaultReplicas)
}

// orgOf is the FlyOrg the proxy's peers belong to: spec.org, or empty for
// the cluster's default FlyOrg, which the webhook resolves (and whose
// absence it reports, which the status then shows).
func orgOf(mp *glaceonv1alpha1.MachineProxy, _ Options) string {
	return mp.Spec.Org
}

// selectorLabels select a MachineProxy's pods. Immutable in a Deployment.
func selectorLabels(mp *glaceonv1alpha1.MachineProxy) map[string]string {
	return map[string]string{LabelName: NameValue, LabelInstance: mp.Name}
}

// childLabels go on every child and on the pods.
func childLabels(mp *glaceonv1alpha1.MachineProxy) map[string]string {
	l := selectorLabels(mp)
	l[LabelComponent] = ComponentValue
	l[inject.LabelManagedBy] = inject.ManagedByValue
	return l
}

func childMeta(mp *glaceonv1alpha1.MachineProxy) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            mp.Name,
		Namespace:       mp.Namespace,
		Labels:          childLabels(mp),
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(mp, glaceonv1alpha1.GroupVersion.WithKind("MachineProxy"))},
	}
}

// serviceDNSName is the Service's cluster DNS name.
func serviceDNSName(mp *glaceonv1alpha1.MachineProxy, clusterDomain string) string {
	return mp.Name + "." + mp.Namespace + ".svc." + clusterDomain
}

// deploymentFor builds the proxy Deployment: replicas of glaceon-sidecar in
// shared mode, each admitted through the webhook in peer-only mode so that
// it gets a Fly peer of its own (see the package doc).
func deploymentFor(mp *glaceonv1alpha1.MachineProxy, targets []proxyTarget, opts Options) *appsv1.Deployment {
	cfg := opts.Inject
	tmplTargets := make([]inject.Target, len(targets))
	for i, t := range targets {
		tmplTargets[i] = t.target
	}
	annotations := map[string]string{
		inject.AnnotationTarget:     inject.FormatTargets(tmplTargets),
		inject.AnnotationInjectMode: InjectModePeerOnly,
	}
	if org := orgOf(mp, opts); org != "" {
		annotations[inject.AnnotationOrg] = org
	}
	if mp.Spec.Region != "" {
		annotations[inject.AnnotationRegion] = mp.Spec.Region
	}

	selector := selectorLabels(mp)
	podLabels := childLabels(mp)
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: childMeta(mp),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicasOf(mp)),
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			// Surge, never go below the desired count: a new replica needs
			// a new peer and a handshake before it serves.
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
				},
			},
			RevisionHistoryLimit: ptr.To[int32](3),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: annotations},
				Spec:       proxyPodSpec(mp, targets, cfg),
			},
		},
	}
}

func proxyPodSpec(mp *glaceonv1alpha1.MachineProxy, targets []proxyTarget, cfg inject.Config) corev1.PodSpec {
	forwards := make([]target.Forward, len(targets))
	ports := make([]corev1.ContainerPort, len(targets))
	for i, t := range targets {
		forwards[i] = inject.HealthForward(cfg, t.listenPort, t.target)
		ports[i] = corev1.ContainerPort{Name: t.portName, ContainerPort: t.listenPort, Protocol: corev1.ProtocolTCP}
	}
	// No startup probe: the Service's readiness gate is enough, and there
	// is no app container to hold back.
	proxy := inject.SidecarContainer{
		Name:      ProxyContainerName,
		Forwards:  forwards,
		Ports:     ports,
		Resources: mp.Spec.Resources,
		Transport: mp.Spec.Transport,
	}.Build(cfg)

	spread := func(key string) corev1.TopologySpreadConstraint {
		return corev1.TopologySpreadConstraint{
			MaxSkew:     1,
			TopologyKey: key,
			// A preference: a one-node cluster still runs every replica.
			WhenUnsatisfiable: corev1.ScheduleAnyway,
			LabelSelector:     &metav1.LabelSelector{MatchLabels: selectorLabels(mp)},
			// Spread each revision on its own during a rollout.
			MatchLabelKeys: []string{appsv1.DefaultDeploymentUniqueLabelKey},
		}
	}

	return corev1.PodSpec{
		Containers: []corev1.Container{proxy},
		Volumes: []corev1.Volume{{
			Name: inject.PeerVolumeName,
			VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				// The webhook (peer-only mode) points this at the pod's
				// own peer Secret at admission.
				SecretName: inject.PlaceholderSecretName,
				// Readable by the fsGroup, i.e. by the sidecar only.
				DefaultMode: ptr.To[int32](0o440),
			}},
		}},
		// Pod Security "restricted" at the pod level too.
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			RunAsUser:      ptr.To(cfg.RunAsUser),
			RunAsGroup:     ptr.To(cfg.RunAsGroup),
			FSGroup:        ptr.To(cfg.RunAsGroup),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		// The proxy never calls the Kubernetes API, and service links
		// would put thousands of variables into big namespaces.
		ServiceAccountName:            mp.Name,
		AutomountServiceAccountToken:  ptr.To(false),
		EnableServiceLinks:            ptr.To(false),
		TerminationGracePeriodSeconds: ptr.To[int64](30),
		NodeSelector:                  mp.Spec.NodeSelector,
		Tolerations:                   mp.Spec.Tolerations,
		TopologySpreadConstraints: []corev1.TopologySpreadConstraint{
			spread(corev1.LabelHostname),
			spread(corev1.LabelTopologyZone),
		},
	}
}

// serviceFor builds the Service named after the MachineProxy: one port per
// target, to the replicas' listeners.
func serviceFor(mp *glaceonv1alpha1.MachineProxy, targets []proxyTarget) *corev1.Service {
	ports := make([]corev1.ServicePort, len(targets))
	for i, t := range targets {
		ports[i] = corev1.ServicePort{
			Name:       t.portName,
			Protocol:   corev1.ProtocolTCP,
			Port:       t.servicePort,
			TargetPort: intstr.FromString(t.portName),
		}
	}
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: childMeta(mp),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selectorLabels(mp),
			Ports:    ports,
		},
	}
}

// pdbFor builds the PodDisruptionBudget of a proxy with more than one
// replica: voluntary disruptions (node drains) take one replica at a time.
// serviceAccountFor is the proxy pods' own identity: no RBAC grants it
// anything and its token is never mounted, but it names the proxies
// apart from the namespace's other workloads (audit, network policies).
func serviceAccountFor(mp *glaceonv1alpha1.MachineProxy) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:                     metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta:                   childMeta(mp),
		AutomountServiceAccountToken: ptr.To(false),
	}
}

func pdbFor(mp *glaceonv1alpha1.MachineProxy) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: childMeta(mp),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: selectorLabels(mp)},
			// A replica that is not ready (no tunnel) serves nothing, so
			// draining it must never be blocked.
			UnhealthyPodEvictionPolicy: ptr.To(policyv1.AlwaysAllow),
		},
	}
}

// wantsPDB reports whether the proxy gets a PodDisruptionBudget.
func wantsPDB(mp *glaceonv1alpha1.MachineProxy) bool {
	return replicasOf(mp) > 1
}

// statusTargets is status.targets.
func statusTargets(targets []proxyTarget) []glaceonv1alpha1.MachineProxyTarget {
	out := make([]glaceonv1alpha1.MachineProxyTarget, len(targets))
	for i, t := range targets {
		out[i] = glaceonv1alpha1.MachineProxyTarget{Target: t.target.String(), Port: t.servicePort}
	}
	return out
}

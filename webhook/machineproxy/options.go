package machineproxy

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/glaceon/glaceon/webhook/inject"
)

// Names of this controller, its labels, annotations, Event and condition
// reasons. Reasons are API for people who alert on them and for the
// printer column: do not rename.
const (
	// ControllerName names the controller (logs, metrics) and is the
	// reportingController of its Events.
	ControllerName = "glaceon-machineproxy"
	// FieldOwner is the server-side apply field manager of the children.
	FieldOwner = "glaceon-machineproxy"

	// InjectModePeerOnly is the glaceon.fly/inject-mode value that asks the
	// webhook for a peer and its Secret only, bound to the pod's
	// glaceon-peer volume, and no sidecar (see the package doc).
	// TODO(inject): use inject.SidecarModePeerOnly once webhook/inject has it.
	InjectModePeerOnly = "peer-only"

	// LabelName, LabelInstance, LabelComponent and inject.LabelManagedBy
	// mark the children. WARNING: LabelName and LabelInstance form the
	// Deployment's selector, which is immutable: changing them strands
	// every existing proxy.
	LabelName = "app.kubernetes.io/name"
	// LabelInstance holds the MachineProxy's name.
	LabelInstance = "app.kubernetes.io/instance"
	// LabelComponent is ComponentValue on every child; with
	// inject.LabelManagedBy it selects what the controller's cache holds.
	LabelComponent = "app.kubernetes.io/component"
	// NameValue is LabelName's value on the children.
	NameValue = "glaceon-machineproxy"
	// ComponentValue is LabelComponent's value on the children.
	ComponentValue = "machineproxy"

	// ProxyContainerName is the proxy pod's only container.
	ProxyContainerName = "proxy"
	// firstListenPort is the container port of the first target; target i
	// listens on firstListenPort+i (at most inject.MaxTargets targets, so
	// 8080-8095, clear of the health port and of privileged ports).
	firstListenPort = 8080

	// Condition reasons.

	// ReasonReplicasReady (Ready=True): at least one replica is ready.
	ReasonReplicasReady = "ReplicasReady"
	// ReasonNoReplicasReady (Ready=False): no replica is ready yet.
	ReasonNoReplicasReady = "NoReplicasReady"
	// ReasonScaledToZero (Ready=False): spec.replicas is 0.
	ReasonScaledToZero = "ScaledToZero"
	// ReasonInvalidSpec (Ready=False, Progressing=False, Degraded=True): the
	// spec passed the schema but cannot be served (e.g. two targets on one
	// port); the message says what to change.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonProvisioning (Progressing=True): the children are being created.
	ReasonProvisioning = "Provisioning"
	// ReasonRollingOut (Progressing=True): the Deployment is rolling out a
	// spec change or scaling.
	ReasonRollingOut = "RollingOut"
	// ReasonRolloutComplete (Progressing=False): every replica runs the
	// current spec and is ready.
	ReasonRolloutComplete = "RolloutComplete"
	// ReasonAsExpected (Degraded=False).
	ReasonAsExpected = "AsExpected"
	// ReasonPodsRejected (Degraded=True): the ReplicaSet cannot create proxy
	// pods, typically because the webhook denies them; the message quotes
	// the denial.
	ReasonPodsRejected = "PodsRejected"
	// ReasonRolloutStalled (Degraded=True): the Deployment exceeded its
	// progress deadline.
	ReasonRolloutStalled = "RolloutStalled"
	// ReasonNameConflict (Degraded=True): an object the proxy needs exists
	// and belongs to someone else; the controller leaves it alone.
	ReasonNameConflict = "NameConflict"
	// ReasonApplyFailed (Degraded=True): writing a child failed; retried
	// with backoff.
	ReasonApplyFailed = "ApplyFailed"

	// Event reasons (besides ReasonInvalidSpec and ReasonNameConflict).

	// ReasonCreated: a child was created.
	ReasonCreated = "Created"
	// (ReasonRollingOut also names the Event of a Deployment spec change:
	// each new pod gets a new peer, each old pod's peer goes with it.)
	// ReasonDeleted: a child no longer needed was deleted (the PDB at one
	// replica or less).
	ReasonDeleted = "Deleted"

	// readinessNote ends every Ready message: there is no other source of
	// readiness than the pods' Ready conditions.
	readinessNote = "readiness is each proxy pod's Ready condition, which the kubelet sets from the proxy's /readyz probe (WireGuard handshake, Fly DNS and every listener up)"
)

// DefaultClusterDomain is Options.ClusterDomain's default.
const DefaultClusterDomain = "cluster.local"

// Options configure SetupWithManager. The zero value of everything but
// Inject is a default.
type Options struct {
	// Inject is the webhook's injection config: the proxy container uses its
	// image, pull policy, default resources, health port and listen host,
	// run-as identity and Secret mount path, and DefaultOrg applies to
	// MachineProxies without spec.org. Pass the webhook's own config so that
	// proxies and injected sidecars never disagree.
	Inject inject.Config
	// ClusterDomain is the cluster's DNS domain, for status.serviceDNSName.
	// Default "cluster.local".
	ClusterDomain string
	// MaxConcurrentReconciles of the controller. Default 2.
	MaxConcurrentReconciles int
	// ExcludedNamespaces are the namespaces the pod webhook never sees
	// (its namespaceSelector): a MachineProxy there would get pods without
	// a peer, so it is refused with a reason instead.
	ExcludedNamespaces []string
	// AllowedTolerationKeys, when not nil, lists the toleration keys a
	// MachineProxy may give its pods ("*" allows any, including the
	// empty key that tolerates every taint). The manager creates the proxy
	// pods' Deployment, so without a list anyone who may create a
	// MachineProxy places pods on whatever tainted nodes it names. nil
	// allows any.
	AllowedTolerationKeys []string
}

func (o *Options) setDefaults() {
	if o.ClusterDomain == "" {
		o.ClusterDomain = DefaultClusterDomain
	}
	if o.MaxConcurrentReconciles <= 0 {
		o.MaxConcurrentReconciles = 2
	}
}

func (o *Options) validate() error {
	var errs []error
	if err := o.Inject.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("Options.Inject: %w", err))
	}
	if msgs := validation.IsDNS1123Subdomain(o.ClusterDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("Options.ClusterDomain %q: %v", o.ClusterDomain, msgs))
	}
	if h := o.Inject.HealthPort; h >= firstListenPort && h < firstListenPort+inject.MaxTargets {
		errs = append(errs, fmt.Errorf("Options.Inject.HealthPort %d collides with the proxy's listen ports %d-%d", h, firstListenPort, firstListenPort+inject.MaxTargets-1))
	}
	if m := o.Inject.MetricsPort; m >= firstListenPort && m < firstListenPort+inject.MaxTargets {
		errs = append(errs, fmt.Errorf("Options.Inject.MetricsPort %d collides with the proxy's listen ports %d-%d", m, firstListenPort, firstListenPort+inject.MaxTargets-1))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("machineproxy: %w", err)
	}
	return nil
}

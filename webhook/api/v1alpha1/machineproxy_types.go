package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of a MachineProxy. The reasons are in
// webhook/machineproxy (one const block with the controller's other names).
const (
	// ConditionReady is True when at least one proxy replica is ready, so
	// the Service answers, and the proxy runs the current spec.
	ConditionReady = "Ready"
	// ConditionProgressing is True while the proxy's Deployment rolls out a
	// spec change or scales, until every replica is updated and ready.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when something needs a human: an invalid
	// spec, pods the webhook refuses, a stalled rollout, a name conflict.
	ConditionDegraded = "Degraded"
)

// MachineProxySpec is the desired state of a MachineProxy.
//
// The proxy is a Deployment of glaceon-sidecar in shared mode: it listens on
// the pod IP, one port per target, and a Service named after the
// MachineProxy exposes those ports. Each replica gets its own Fly WireGuard
// peer from glaceon's admission webhook (a WireGuard key cannot be shared by
// two live endpoints).
//
// +kubebuilder:validation:XValidation:rule="!has(self.port) || !self.target.contains(',')",message="port sets the Service port of a single target; with several targets each is served on its own port, so remove port",fieldPath=".port"
type MachineProxySpec struct {
	// Org is the Fly organization slug the proxy's peers belong to, as
	// `fly orgs list` shows it. Empty means the glaceon manager's default org.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="org must be a Fly org slug as `fly orgs list` shows it: lower-case letters, digits and '-'"
	Org string `json:"org,omitempty"`

	// Region is the Fly WireGuard gateway region, a three-letter code such
	// as iad or yyz. Empty means the manager's default, or Fly's choice.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]{3}$')",message="region must be a Fly region code: three lower-case letters such as iad or yyz (see `fly platform regions`)"
	Region string `json:"region,omitempty"`

	// Target lists the Fly app(s) the proxy reaches, with the grammar of the
	// glaceon.fly/target pod annotation: comma-separated entries, each
	// "app" (app.flycast:80), "host:port" (db.internal:5432) or
	// "http://host[:port]" (port 80 unless given). Hosts end in .flycast or
	// .internal. Each target is served on its own Service port: Port for a
	// single target, otherwise the target's own port, so no two targets may
	// share a port. (That last rule is checked by the controller, which
	// reports it in the Ready condition: as a CEL rule it would cost more
	// than the API server allows.) The CEL rules below are a first line of
	// defence for the grammar of package flyapi/target, which the
	// controller applies; both are tested against one table
	// (flyapi/target/targettest).
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=400
	// +kubebuilder:validation:XValidation:rule="self.split(',').size() <= 16",message="at most 16 targets per MachineProxy"
	// +kubebuilder:validation:XValidation:rule="!self.lowerAscii().contains('https://')",message="https:// is not supported: the proxy forwards TCP and TLS passes through it, so write 'host:443' to reach port 443, or 'http://host' for plain HTTP"
	// +kubebuilder:validation:XValidation:rule="self.split(',').all(e, e.trim().lowerAscii().startsWith('https://') || (e.trim().lowerAscii().matches('^(http://)?([a-z0-9]([-a-z0-9]*[a-z0-9])?[.])*[a-z0-9]([-a-z0-9]*[a-z0-9])?(:[0-9]+)?/?$') && (!e.trim().endsWith('/') || e.trim().lowerAscii().startsWith('http://'))))",message="each comma-separated target must be 'app', 'host:port' or 'http://host[:port]' with no path and no empty entry, e.g. 'twi-ollama', 'db.internal:5432' or 'http://twi-ollama.flycast'"
	// +kubebuilder:validation:XValidation:rule="self.split(',').all(e, e.trim().lowerAscii().startsWith('https://') || e.trim().lowerAscii().replace('http://', '').replace('/', '').split(':')[0].endsWith('.flycast') || e.trim().lowerAscii().replace('http://', '').replace('/', '').split(':')[0].endsWith('.internal') || (!e.contains('.') && !e.contains(':') && !e.contains('/')))",message="target hosts must be Fly private hosts ending in .flycast or .internal (e.g. 'twi-ollama.flycast', 'db.internal:5432'); a bare app name such as 'twi-ollama' means twi-ollama.flycast:80"
	// +kubebuilder:validation:XValidation:rule="self.split(',').all(e, e.contains(':') || !e.trim().lowerAscii().endsWith('.internal'))",message="a .internal host needs a port, e.g. 'db.internal:5432' (or 'http://db.internal' for port 80)"
	// +kubebuilder:validation:XValidation:rule="self.split(',').all(e, e.trim().lowerAscii().startsWith('https://') || !e.trim().lowerAscii().replace('http://', '').replace('/', '').contains(':') || (e.trim().lowerAscii().replace('http://', '').replace('/', '').split(':')[1].matches('^[0-9]{1,5}$') && int(e.trim().lowerAscii().replace('http://', '').replace('/', '').split(':')[1]) >= 1 && int(e.trim().lowerAscii().replace('http://', '').replace('/', '').split(':')[1]) <= 65535))",message="target ports must be numbers from 1 to 65535"
	Target string `json:"target"`

	// Port is the Service port of the target when Target lists exactly
	// one; default the target's own port. With several targets each is
	// served on its own port and Port must be unset.
	//
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 65535",message="port must be a number from 1 to 65535"
	Port *int32 `json:"port,omitempty"`

	// Replicas is the number of proxy pods; each one is a Fly WireGuard
	// peer of its own. 0 stops the proxy (and removes its peers).
	//
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:XValidation:rule="self >= 0",message="replicas must be 0 or more (0 stops the proxy and removes its Fly peers)"
	// +kubebuilder:validation:XValidation:rule="self <= 100",message="replicas must be at most 100: each replica is a Fly WireGuard peer of its own"
	Replicas *int32 `json:"replicas,omitempty"`

	// Transport is how the proxy's sidecars reach the Fly gateway: auto
	// (WireGuard over UDP, falling back to a WebSocket over TCP 443 when no
	// handshake comes back, and returning when UDP works), udp, or
	// websocket. Empty means auto.
	//
	// +optional
	// +kubebuilder:validation:Enum=auto;udp;websocket
	Transport string `json:"transport,omitempty"`

	// Resources of the proxy container. Default: requests of 10m CPU and
	// 32Mi memory, a 128Mi memory limit, no CPU limit (throttling a tunnel
	// only adds latency).
	//
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// NodeSelector restricts the nodes the proxy pods run on.
	//
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations of the proxy pods.
	//
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
}

// MachineProxyTarget is one target as the proxy serves it.
type MachineProxyTarget struct {
	// Target is the Fly side in canonical "host:port" form.
	Target string `json:"target"`
	// Port is the Service port that reaches it.
	Port int32 `json:"port"`
}

// MachineProxyStatus is the observed state of a MachineProxy.
type MachineProxyStatus struct {
	// ObservedGeneration is the metadata.generation the status describes.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready, Progressing and Degraded, each with a reason and
	// observedGeneration.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Replicas is the number of proxy pods that exist (from the
	// Deployment), whatever their state.
	//
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// ReadyReplicas is the number of proxy pods whose Ready condition is
	// True: the kubelet sets it from the proxy's /readyz probe (tunnel
	// handshake, Fly DNS and every listener up).
	//
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// Selector is the label selector of the proxy pods, for the scale
	// subresource (kubectl scale, HorizontalPodAutoscaler).
	//
	// +optional
	Selector string `json:"selector,omitempty"`

	// ServiceDNSName is the cluster DNS name of the proxy's Service, e.g.
	// twi-ollama.flycast.svc.cluster.local. A MachineProxy named after the
	// app in a namespace named flycast (or internal) makes the Fly name
	// itself resolve in every namespace through the DNS search path.
	//
	// +optional
	ServiceDNSName string `json:"serviceDNSName,omitempty"`

	// Targets maps each target to its Service port.
	//
	// +optional
	// +listType=atomic
	Targets []MachineProxyTarget `json:"targets,omitempty"`
}

// MachineProxy is a shared proxy to private Fly.io apps: a Deployment of
// glaceon-sidecar in shared mode, one Fly WireGuard peer per replica, and a
// Service named after the MachineProxy that every pod in the cluster can
// call. A MachineProxy twi-ollama in namespace flycast makes
// http://twi-ollama.flycast work cluster-wide.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=mp;mps,categories=glaceon
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.target`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Service",type=string,priority=1,JSONPath=`.status.serviceDNSName`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be at most 63 lower-case letters, digits and '-', starting with a letter: it names the proxy's Service"
type MachineProxy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec MachineProxySpec `json:"spec"`
	// +optional
	Status MachineProxyStatus `json:"status,omitempty"`
}

// MachineProxyList is a list of MachineProxies.
//
// +kubebuilder:object:root=true
type MachineProxyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MachineProxy `json:"items"`
}

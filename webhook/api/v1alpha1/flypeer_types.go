package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// FlyPeerPhase is where a FlyPeer is in its life.
//
// +kubebuilder:validation:Enum=Provisioning;Available;Ready;Bound;Releasing
type FlyPeerPhase string

// Phases of a FlyPeer.
const (
	// FlyPeerProvisioning: written before the Fly call; the Fly peer may or
	// may not exist yet. A FlyPeer stuck here past the sweeper's grace
	// period is deleted (which removes its Fly peer, if any).
	FlyPeerProvisioning FlyPeerPhase = "Provisioning"
	// FlyPeerAvailable: a pooled peer (LabelPool): the Fly peer exists and
	// its wg-quick file is in a Secret in glaceon's namespace; no pod has
	// it (spec.pod.namespace empty). Admission claims it by setting
	// spec.pod.namespace (the phase stays until the FlyPeer controller binds
	// it to its pod: Bound); it never returns to the pool.
	FlyPeerAvailable FlyPeerPhase = "Available"
	// FlyPeerReady: the Fly peer exists and the pod's Secret holds its
	// wg-quick file; the pod is not created yet.
	FlyPeerReady FlyPeerPhase = "Ready"
	// FlyPeerBound: the pod exists and spec.pod names it; the FlyPeer lives
	// as long as that pod.
	FlyPeerBound FlyPeerPhase = "Bound"
	// FlyPeerReleasing: deleted; the finalizer removes the Fly peer, then
	// the pod's Secret.
	FlyPeerReleasing FlyPeerPhase = "Releasing"
)

// LabelPool marks a FlyPeer made for the pool (and its key Secret in
// glaceon's namespace); the value is the FlyOrg. It stays when the peer is
// claimed, so that the pooled key Secret is removed with it.
const LabelPool = "glaceon.fly/pool"

// AnnotationClaimedAt on a pooled FlyPeer is when admission claimed it
// (RFC 3339); the sweeper's grace for an unclaimed pod runs from there.
const AnnotationClaimedAt = "glaceon.fly/claimed-at"

// FlyPeerPod is the pod a FlyPeer was made for.
type FlyPeerPod struct {
	// Namespace of the pod (and of its wg-quick Secret, named after the
	// FlyPeer). Empty while the peer waits in the pool.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="size(oldSelf) == 0 || self == oldSelf",message="spec.pod.namespace cannot change once set: a claimed peer never returns to the pool"
	Namespace string `json:"namespace"`
	// Name of the pod, once the pod exists (pods from controllers have no
	// name at admission).
	//
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name,omitempty"`
	// UID of the pod, once the pod exists.
	//
	// +optional
	UID types.UID `json:"uid,omitempty"`
}

// FlyPeerSpec is one Fly WireGuard peer this cluster created.
type FlyPeerSpec struct {
	// Org is the name of the FlyOrg the peer belongs to.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Org string `json:"org"`
	// Region is the WireGuard gateway region asked for (empty: Fly's choice).
	//
	// +optional
	// +kubebuilder:validation:MaxLength=16
	Region string `json:"region,omitempty"`
	// PublicKey is the peer's WireGuard public key (base64). The private
	// key exists only in the pod's Secret.
	//
	// +required
	// +kubebuilder:validation:MaxLength=64
	PublicKey string `json:"publicKey"`
	// Pod is the pod the peer is for.
	//
	// +required
	Pod FlyPeerPod `json:"pod"`
}

// FlyPeerStatus is what the manager knows of the peer.
type FlyPeerStatus struct {
	// Phase: Provisioning, Available (pooled), Ready, Bound or Releasing.
	//
	// +optional
	Phase FlyPeerPhase `json:"phase,omitempty"`
	// PeerIP is the peer's address in the org's private network.
	//
	// +optional
	PeerIP string `json:"peerIP,omitempty"`
	// OrganizationID is the Fly node ID of the org the peer was added to;
	// removal uses it.
	//
	// +optional
	OrganizationID string `json:"organizationID,omitempty"`
	// Conditions: Removed is False while removal of the Fly peer fails.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// FlyPeer is one Fly WireGuard peer this cluster made for a pod. It is
// written before the Fly call, and its finalizer removes the Fly peer:
// `kubectl get flypeers` is the cluster's view of its Fly peers. Written by
// the glaceon manager only.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=fp,categories=glaceon
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Org",type=string,JSONPath=`.spec.org`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.pod.namespace`
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.spec.pod.name`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Peer IP",type=string,JSONPath=`.status.peerIP`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type FlyPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   FlyPeerSpec   `json:"spec"`
	Status FlyPeerStatus `json:"status,omitempty"`
}

// FlyPeerList is a list of FlyPeers.
//
// +kubebuilder:object:root=true
type FlyPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FlyPeer `json:"items"`
}

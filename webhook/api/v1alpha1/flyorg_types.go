package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AnnotationDefaultFlyOrg marks the FlyOrg used by pods without a
// glaceon.fly/org annotation (value "true"). With a single FlyOrg in the
// cluster, that one is the default without the annotation.
const AnnotationDefaultFlyOrg = "glaceon.fly/default"

// Condition types of a FlyOrg (Ready, shared with MachineProxy) and a
// FlyPeer. Reasons live with the controllers that set them.
const (
	// ConditionPoolReady is a FlyOrg's pool condition: False with reason
	// Depleted while a pool region has no Available peer (admissions there
	// call Fly, and fail during an outage). Absent when the pool is off.
	ConditionPoolReady = "PoolReady"
	// ConditionFlyPeerRemoved is False on a FlyPeer whose Fly peer could not
	// be removed yet; the message says why and what happens next.
	ConditionFlyPeerRemoved = "Removed"
)

// SecretKeyRef names a key of a Secret in glaceon's own namespace.
type SecretKeyRef struct {
	// Name of the Secret, in the namespace the glaceon manager runs in.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key of the token inside the Secret. Default "token".
	//
	// +optional
	// +kubebuilder:default=token
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// FlyOrgSpec is one Fly organization this cluster may create WireGuard
// peers in, and who may use it.
type FlyOrgSpec struct {
	// Slug is the Fly organization slug as `fly orgs list` shows it.
	// Default: the FlyOrg's name.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="slug must be a Fly org slug as `fly orgs list` shows it: lower-case letters, digits and '-'"
	Slug string `json:"slug,omitempty"`

	// TokenSecretRef is the Secret, in glaceon's own namespace, holding a
	// Fly API token for this org (`fly tokens create org` or
	// `fly tokens create wireguard`). The manager follows changes: rotating
	// the token needs no restart.
	//
	// +required
	TokenSecretRef SecretKeyRef `json:"tokenSecretRef"`

	// Namespaces lists the namespaces whose pods may use this org, as
	// path.Match patterns ("*", "team-a", "ci-*"). Pods in other
	// namespaces naming this FlyOrg are denied.
	//
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.all(p, p.matches('^[-a-z0-9*?]+$'))",message="namespaces are path.Match patterns of namespace names: lower-case letters, digits, '-', '*' and '?'"
	Namespaces []string `json:"namespaces"`

	// DefaultRegion is the WireGuard gateway region for pods that do not
	// set glaceon.fly/region, a three-letter code such as yyz. Empty lets
	// Fly choose the nearest.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]{3}$')",message="defaultRegion must be a Fly region code: three lower-case letters such as iad or yyz (see `fly platform regions`)"
	DefaultRegion string `json:"defaultRegion,omitempty"`

	// Pool keeps ready Fly peers (FlyPeers in phase Available) so that
	// pods are admitted without a Fly call, also while the Fly API is down.
	// Off when absent or size 0.
	//
	// +optional
	Pool *FlyOrgPool `json:"pool,omitempty"`
}

// FlyOrgPool is the warm peer pool of a FlyOrg. Each pooled peer is a Fly
// peer and a Secret in glaceon's namespace; at most 500 in all.
//
// +kubebuilder:validation:XValidation:rule="!has(self.regions) || !has(self.size) || size(self.regions) * self.size <= 500",message="spec.pool.size times the number of spec.pool.regions must be at most 500 pooled peers; lower the size or list fewer regions"
type FlyOrgPool struct {
	// Size is the number of Available peers kept per region. 0 turns the
	// pool off (pooled peers are removed). A sensible value is the number
	// of annotated pods that start in a burst (a rollout's surge, a Job's
	// parallelism), e.g. 10.
	//
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=500
	Size int32 `json:"size,omitempty"`
	// Regions are the WireGuard gateway regions to keep peers for, as Fly
	// region codes (yyz, iad). Only pods asking for one of them (by
	// glaceon.fly/region, or the default region) are served from the pool.
	// Empty: the FlyOrg's defaultRegion alone (or Fly's choice of region
	// when that is empty too).
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=16
	// +kubebuilder:validation:XValidation:rule="self.all(r, r.matches('^[a-z]{3}$'))",message="spec.pool.regions must be Fly region codes: three lower-case letters such as iad or yyz (see `fly platform regions`)"
	Regions []string `json:"regions,omitempty"`
}

// PoolRegions is the regions the pool keeps peers for ("" being Fly's
// choice), or nil when the pool is off.
func (o *FlyOrg) PoolRegions() []string {
	if o.Spec.Pool == nil || o.Spec.Pool.Size <= 0 {
		return nil
	}
	if len(o.Spec.Pool.Regions) == 0 {
		return []string{o.Spec.DefaultRegion}
	}
	return o.Spec.Pool.Regions
}

// PoolSize is spec.pool.size per region (0: off).
func (o *FlyOrg) PoolSize() int32 {
	if o.Spec.Pool == nil {
		return 0
	}
	return max(o.Spec.Pool.Size, 0)
}

// FlyOrgPoolStatus is the state of the pool.
type FlyOrgPoolStatus struct {
	// Target is the number of Available peers wanted (size × regions).
	Target int32 `json:"target"`
	// Available is the number of Available peers, ready to be claimed.
	Available int32 `json:"available"`
	// Regions is the same per region.
	//
	// +optional
	// +listType=map
	// +listMapKey=region
	Regions []FlyOrgPoolRegionStatus `json:"regions,omitempty"`
}

// FlyOrgPoolRegionStatus is the pool of one region.
type FlyOrgPoolRegionStatus struct {
	// Region code; empty for Fly's choice.
	Region    string `json:"region"`
	Target    int32  `json:"target"`
	Available int32  `json:"available"`
}

// FlyOrgStatus is what the manager last found out about the org.
type FlyOrgStatus struct {
	// Conditions: Ready is True when the token is accepted and the org was
	// found; otherwise its message carries the Fly error and the fix.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation the conditions describe.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// OrganizationID is the org's Fly node ID, used to add and remove peers.
	//
	// +optional
	OrganizationID string `json:"organizationID,omitempty"`
	// Peers is the number of FlyPeers of this FlyOrg, recounted moments
	// after one is made or goes.
	//
	// +optional
	Peers int32 `json:"peers,omitempty"`
	// Pool is the warm peer pool, when spec.pool is on.
	//
	// +optional
	Pool *FlyOrgPoolStatus `json:"pool,omitempty"`
}

// FlyOrg is a Fly.io organization this cluster may use, with its API
// token and the namespaces allowed to use it. Cluster-scoped and written by
// cluster admins only, like cert-manager's ClusterIssuer.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=fo,categories=glaceon
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Slug",type=string,JSONPath=`.spec.slug`,description="Fly org slug (empty: the name)"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Peers",type=integer,JSONPath=`.status.peers`
// +kubebuilder:printcolumn:name="Pool",type=integer,JSONPath=`.status.pool.available`,description="Available pooled peers"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type FlyOrg struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   FlyOrgSpec   `json:"spec"`
	Status FlyOrgStatus `json:"status,omitempty"`
}

// SlugOrName is spec.slug, or the FlyOrg's name when the slug is empty.
func (o *FlyOrg) SlugOrName() string {
	if o.Spec.Slug != "" {
		return o.Spec.Slug
	}
	return o.Name
}

// IsDefault reports whether the FlyOrg carries AnnotationDefaultFlyOrg.
func (o *FlyOrg) IsDefault() bool { return o.Annotations[AnnotationDefaultFlyOrg] == "true" }

// FlyOrgList is a list of FlyOrgs.
//
// +kubebuilder:object:root=true
type FlyOrgList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FlyOrg `json:"items"`
}

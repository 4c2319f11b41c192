// Package v1alpha1 holds glaceon's custom resources, API group glaceon.fly,
// version v1alpha1: the MachineProxy, a shared proxy that gives a private
// Fly.io app a cluster-wide name; the FlyOrg, a Fly organization the
// cluster may use (token, allowed namespaces); and the FlyPeer, one Fly
// WireGuard peer the cluster made for a pod.
//
// The CRD YAML in deploy/crd is generated from these types (make manifests),
// and so is zz_generated.deepcopy.go (make generate); validation lives in
// the +kubebuilder markers so that `kubectl apply` refuses a bad spec with
// the message written here, before any controller sees it.
//
// +kubebuilder:object:generate=true
// +groupName=glaceon.fly
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of this package's kinds.
	GroupVersion = schema.GroupVersion{Group: "glaceon.fly", Version: "v1alpha1"}

	// SchemeBuilder registers this package's kinds with a runtime.Scheme.
	// It is apimachinery's, so that importing the API pulls in no
	// controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion,
		&MachineProxy{}, &MachineProxyList{},
		&FlyOrg{}, &FlyOrgList{},
		&FlyPeer{}, &FlyPeerList{},
	)
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}

package machineproxy

import (
	"path/filepath"
	"runtime"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
)

// defaultTarget is the target of newMachineProxy fixtures.
const defaultTarget = "http://twi-ollama.flycast"

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func crdDir() string { return filepath.Join(repoRoot(), "deploy", "crd") }

// mpOption changes a fixture built by newMachineProxy.
type mpOption func(*glaceonv1alpha1.MachineProxy)

// newMachineProxy builds MachineProxy "flycast/proxy" (generation 1, a
// fixed UID) with target http://twi-ollama.flycast and nothing else set, as
// a user would write it before the API server defaults replicas; then it
// applies opts.
func newMachineProxy(opts ...mpOption) *glaceonv1alpha1.MachineProxy {
	mp := &glaceonv1alpha1.MachineProxy{
		TypeMeta: metav1.TypeMeta{APIVersion: glaceonv1alpha1.GroupVersion.String(), Kind: "MachineProxy"},
		ObjectMeta: metav1.ObjectMeta{
			Name:       "proxy",
			Namespace:  "flycast",
			UID:        types.UID("6f1c1c3e-0000-4000-8000-000000000001"),
			Generation: 1,
		},
		Spec: glaceonv1alpha1.MachineProxySpec{Target: defaultTarget},
	}
	for _, opt := range opts {
		opt(mp)
	}
	return mp
}

func withName(name string) mpOption {
	return func(mp *glaceonv1alpha1.MachineProxy) { mp.Name = name }
}

func withTarget(target string) mpOption {
	return func(mp *glaceonv1alpha1.MachineProxy) { mp.Spec.Target = target }
}

func withOrg(org string) mpOption {
	return func(mp *glaceonv1alpha1.MachineProxy) { mp.Spec.Org = org }
}

func withRegion(region string) mpOption {
	return func(mp *glaceonv1alpha1.MachineProxy) { mp.Spec.Region = region }
}

func withPort(port int32) mpOption {
	return func(mp *glaceonv1alpha1.MachineProxy) { mp.Spec.Port = ptr.To(port) }
}

func withTransport(tr string) mpOption {
	return func(mp *glaceonv1alpha1.MachineProxy) { mp.Spec.Transport = tr }
}

func withReplicas(n int32) mpOption {
	return func(mp *glaceonv1alpha1.MachineProxy) { mp.Spec.Replicas = ptr.To(n) }
}

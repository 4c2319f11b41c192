package peers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/glaceon/glaceon/flyapi/wgquick"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
)

// FinalizerFlyPeer on a FlyPeer makes the peer controller remove the Fly
// peer, then the pod's Secret, before the FlyPeer goes.
const FinalizerFlyPeer = "glaceon.fly/fly-peer"

// indexPodPeer indexes cached pods by their glaceon.fly/peer annotation.
const indexPodPeer = "glaceon.fly/pod-peer"

var podGVK = corev1.SchemeGroupVersion.WithKind("Pod")

// NewFlyPeer is the FlyPeer admission writes before it calls Fly: phase
// Provisioning (no status yet), our finalizer, the pod's namespace.
func NewFlyPeer(name, org, region string, publicKey wgquick.Key, namespace string) *glaceonv1alpha1.FlyPeer {
	return &glaceonv1alpha1.FlyPeer{
		ObjectMeta: metav1.ObjectMeta{
			Name:       name,
			Labels:     map[string]string{inject.LabelManagedBy: inject.ManagedByValue},
			Finalizers: []string{FinalizerFlyPeer},
		},
		Spec: glaceonv1alpha1.FlyPeerSpec{
			Org:       org,
			Region:    region,
			PublicKey: publicKey.String(),
			Pod:       glaceonv1alpha1.FlyPeerPod{Namespace: namespace},
		},
	}
}

// NewPooledFlyPeer is the FlyPeer the pool refill writes before it calls
// Fly: like NewFlyPeer, with no pod yet and the LabelPool label naming
// the FlyOrg.
func NewPooledFlyPeer(name, org, region string, publicKey wgquick.Key) *glaceonv1alpha1.FlyPeer {
	fp := NewFlyPeer(name, org, region, publicKey, "")
	fp.Labels[glaceonv1alpha1.LabelPool] = org
	return fp
}

// IsPooled reports whether fp was made for the pool (claimed or not).
func IsPooled(fp *glaceonv1alpha1.FlyPeer) bool { return fp.Labels[glaceonv1alpha1.LabelPool] != "" }

// InPool reports whether fp waits in the pool: made for it and not
// claimed by a pod's namespace.
func InPool(fp *glaceonv1alpha1.FlyPeer) bool { return IsPooled(fp) && fp.Spec.Pod.Namespace == "" }

// NewPoolKeySecret is the Secret, in glaceon's namespace, that holds a
// pooled peer's wg-quick file until admission copies it into the pod's
// Secret. Named after the FlyPeer, like the pod's Secret.
func NewPoolKeySecret(fp *glaceonv1alpha1.FlyPeer, namespace string, wgQuick []byte) *corev1.Secret {
	s := NewPeerSecret(fp, wgQuick)
	s.Namespace = namespace
	s.Labels[glaceonv1alpha1.LabelPool] = fp.Spec.Org
	return s
}

// NewPeerSecret is the pod's Secret: the wg-quick file and nothing else that
// matters. Its labels are for people; nothing glaceon does depends on
// them, and deleting or changing the Secret changes nothing at Fly.
func NewPeerSecret(fp *glaceonv1alpha1.FlyPeer, wgQuick []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fp.Name,
			Namespace: fp.Spec.Pod.Namespace,
			Labels: map[string]string{
				inject.LabelManagedBy: inject.ManagedByValue,
				inject.LabelPeerName:  fp.Name,
			},
		},
		Type:      corev1.SecretTypeOpaque,
		Immutable: ptr.To(true),
		Data:      map[string][]byte{inject.SecretKeyWGConfig: wgQuick},
	}
}

// newPodMeta is an empty metadata-only pod: the controller needs a pod's
// name, UID and annotations, never its spec.
func newPodMeta() *metav1.PartialObjectMetadata {
	p := &metav1.PartialObjectMetadata{}
	p.SetGroupVersionKind(podGVK)
	return p
}

func newPodMetaList() *metav1.PartialObjectMetadataList {
	l := &metav1.PartialObjectMetadataList{}
	l.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	return l
}

// injectedPodSelector selects the pods the webhook injected.
func injectedPodSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{inject.LabelInjected: "true"})
}

// flyPeerOfPod maps an injected pod to the FlyPeer its annotation names.
func flyPeerOfPod(_ context.Context, pod *metav1.PartialObjectMetadata) []reconcile.Request {
	if name := pod.Annotations[inject.AnnotationPeer]; name != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
	}
	return nil
}

// claims reports whether pod is the one fp was made for: same namespace,
// names fp in its annotation, and (once bound) the bound UID.
func claims(fp *glaceonv1alpha1.FlyPeer, pod *metav1.PartialObjectMetadata) bool {
	if pod.Namespace != fp.Spec.Pod.Namespace || pod.Annotations[inject.AnnotationPeer] != fp.Name || pod.UID == "" {
		return false
	}
	return fp.Spec.Pod.UID == "" || fp.Spec.Pod.UID == pod.UID
}

// newPodCache is the package's cache: injected pods, metadata only,
// indexed by the peer they name. No Secret is ever cached.
func newPodCache(ctx context.Context, mgr manager.Manager) (cache.Cache, error) {
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient: mgr.GetHTTPClient(),
		Scheme:     mgr.GetScheme(),
		Mapper:     mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{
			newPodMeta(): {Label: injectedPodSelector(), Transform: cache.TransformStripManagedFields()},
		},
		ReaderFailOnMissingInformer: true,
	})
	if err != nil {
		return nil, fmt.Errorf("peers: create cache: %w", err)
	}
	err = c.IndexField(ctx, newPodMeta(), indexPodPeer, func(o client.Object) []string {
		if p := o.GetAnnotations()[inject.AnnotationPeer]; p != "" {
			return []string{p}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("peers: index pods by peer: %w", err)
	}
	return c, nil
}

// cacheRunnable puts the package's cache in the manager's cache group, so it
// starts (on every replica, for a fast failover) before the leader's
// controllers and gates the manager's readiness like the main cache.
type cacheRunnable struct{ cache.Cache }

// GetCache marks the runnable as a cache for the manager.
func (c cacheRunnable) GetCache() cache.Cache { return c.Cache }

package peers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/glaceon/glaceon/webhook/inject"
)

// indexPodPeer indexes cached pods by their glaceon.fly/peer annotation.
const indexPodPeer = "glaceon.fly/pod-peer"

var secretGVK = corev1.SchemeGroupVersion.WithKind("Secret")

// newSecretMeta is an empty metadata-only peer Secret. Peer Secrets are
// handled as metadata only: the controller never needs the wg-quick file, so
// the private keys are never loaded into its memory.
func newSecretMeta() *metav1.PartialObjectMetadata {
	s := &metav1.PartialObjectMetadata{}
	s.SetGroupVersionKind(secretGVK)
	return s
}

func newSecretMetaList() *metav1.PartialObjectMetadataList {
	l := &metav1.PartialObjectMetadataList{}
	l.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	return l
}

// peerSecretSelector selects glaceon's peer Secrets: managed by glaceon and
// naming a peer. Other glaceon Secrets (e.g. the serving certificate) lack
// the peer label and are never seen, let alone swept.
func peerSecretSelector() labels.Selector {
	managed, err := labels.NewRequirement(inject.LabelManagedBy, selection.Equals, []string{inject.ManagedByValue})
	if err != nil {
		panic(err)
	}
	peer, err := labels.NewRequirement(inject.LabelPeerName, selection.Exists, nil)
	if err != nil {
		panic(err)
	}
	return labels.NewSelector().Add(*managed, *peer)
}

// injectedPodSelector selects the pods the webhook injected.
func injectedPodSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{inject.LabelInjected: "true"})
}

// isPeerSecret re-checks the selector: the cache filters, but a defensive
// check keeps a mis-configured cache from touching other Secrets.
func isPeerSecret(s client.Object) bool {
	l := s.GetLabels()
	_, ok := l[inject.LabelPeerName]
	return ok && l[inject.LabelManagedBy] == inject.ManagedByValue
}

// peerOf returns the Fly peer name and org slug of a peer Secret. The name
// falls back to the Secret's name (the webhook names the Secret after its
// peer); the org has no fallback.
func peerOf(s client.Object) (peer, org string) {
	peer = s.GetLabels()[inject.LabelPeerName]
	if peer == "" {
		peer = s.GetName()
	}
	return peer, s.GetLabels()[inject.LabelPeerOrg]
}

// claims reports whether pod claims the peer Secret: the pod names the
// Secret's peer in its annotation and mounts the Secret. Both are required,
// so a pod copying another's annotation does not keep its Secret alive.
func claims(pod *corev1.Pod, secretName, peer string) bool {
	if pod.UID == "" || pod.Annotations[inject.AnnotationPeer] != peer {
		return false
	}
	return mountsSecret(pod, secretName)
}

func mountsSecret(pod *corev1.Pod, secretName string) bool {
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secretName {
			return true
		}
	}
	return false
}

// podOwnerUIDs returns the UIDs of the pods owning s, and whether s has an
// owner of another kind (then its lifecycle is someone else's: the sweeper
// leaves it alone).
func podOwnerUIDs(s client.Object) (uids []types.UID, otherOwner bool) {
	for _, ref := range s.GetOwnerReferences() {
		if ref.Kind == "Pod" && ref.APIVersion == "v1" {
			uids = append(uids, ref.UID)
		} else {
			otherOwner = true
		}
	}
	return uids, otherOwner
}

// podOwnerRef is the reference binding a peer Secret to its pod.
//
// Controller is false: a pod does not manage Secrets, and several pods may
// (wrongly) claim one Secret; each gets a reference so the Secret lives as
// long as any of them. BlockOwnerDeletion is false: with true, a foreground
// deletion of the pod would wait for the Secret, whose finalizer waits for
// the Fly API — a Fly outage must never hold up pod deletion. It would also
// need update on pods/finalizers under OwnerReferencesPermissionEnforcement.
func podOwnerRef(pod *corev1.Pod) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: "v1",
		Kind:       "Pod",
		Name:       pod.Name,
		UID:        pod.UID,
	}
}

// secretsForPod maps an injected pod to the peer Secret(s) it mounts: the
// glaceon volume, or any Secret volume named after its peer.
func secretsForPod(_ context.Context, pod *corev1.Pod) []reconcile.Request {
	peer := pod.Annotations[inject.AnnotationPeer]
	if peer == "" {
		return nil
	}
	var reqs []reconcile.Request
	for _, v := range pod.Spec.Volumes {
		if v.Secret == nil || (v.Name != inject.PeerVolumeName && v.Secret.SecretName != peer) {
			continue
		}
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: pod.Namespace, Name: v.Secret.SecretName}})
	}
	return reqs
}

// slimPod keeps what the controller reads of a pod: metadata and volumes.
// The cache is this package's own, so nobody else sees the trimmed pods.
func slimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // tombstones
	}
	pod.ManagedFields = nil
	pod.Spec = corev1.PodSpec{Volumes: pod.Spec.Volumes}
	pod.Status = corev1.PodStatus{Phase: pod.Status.Phase}
	return pod, nil
}

// newCache builds the package's cache: peer Secrets as metadata, injected
// pods slimmed, pods indexed by peer annotation.
func newCache(ctx context.Context, mgr manager.Manager) (cache.Cache, error) {
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient: mgr.GetHTTPClient(),
		Scheme:     mgr.GetScheme(),
		Mapper:     mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{
			newSecretMeta(): {Label: peerSecretSelector(), Transform: cache.TransformStripManagedFields()},
			&corev1.Pod{}:   {Label: injectedPodSelector(), Transform: slimPod},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("peers: create cache: %w", err)
	}
	err = c.IndexField(ctx, &corev1.Pod{}, indexPodPeer, func(o client.Object) []string {
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

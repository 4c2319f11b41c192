package peers

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/glaceon/glaceon/webhook/inject"
)

// SetupWithManager adds the peer lifecycle to mgr: the package's cache, the
// peer Secret controller and (unless Options.DisableSweeper) the sweeper.
// The controller and sweeper run on the leader only; the cache runs on every
// replica. cmd/glaceon calls it once, e.g.
//
//	err := peers.SetupWithManager(mgr, peers.Options{
//		Fly:    flyClient, // *flyapi.Client
//		Prefix: "k8s-" + clusterName + "-",
//		Orgs:   allowedOrgs,
//	})
func SetupWithManager(mgr ctrl.Manager, opts Options) error {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return err
	}
	opts.Orgs = slices.Clone(opts.Orgs)

	// The context only serves index registration, which does not block.
	c, err := newCache(context.Background(), mgr)
	if err != nil {
		return err
	}
	if err := mgr.Add(cacheRunnable{c}); err != nil {
		return fmt.Errorf("peers: add cache: %w", err)
	}

	fly := newFlyOps(opts.Fly, opts.FlyCallTimeout)
	recorder := mgr.GetEventRecorder(ControllerName)

	r := &secretReconciler{
		cache:    c,
		client:   mgr.GetClient(),
		fly:      fly,
		recorder: recorder,
		clock:    opts.Clock,
		opts:     opts,
		failures: map[types.UID]int{},
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		WatchesRawSource(source.Kind(c, newSecretMeta(),
			&handler.TypedEnqueueRequestForObject[*metav1.PartialObjectMetadata]{})).
		WatchesRawSource(source.Kind(c, &corev1.Pod{},
			handler.TypedEnqueueRequestsFromMapFunc(secretsForPod), podChanges())).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.MaxConcurrentReconciles}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("peers: build controller: %w", err)
	}

	if opts.DisableSweeper {
		return nil
	}
	s := &sweeper{
		cache:     c,
		apiReader: mgr.GetAPIReader(),
		client:    mgr.GetClient(),
		fly:       fly,
		recorder:  recorder,
		clock:     opts.Clock,
		opts:      opts,
		log:       mgr.GetLogger().WithName(SweeperName),
	}
	if err := mgr.Add(s); err != nil {
		return fmt.Errorf("peers: add sweeper: %w", err)
	}
	return nil
}

// podChanges passes pod creations (and the initial list) and updates that
// change the peer annotation or the volumes; a pod's deletion needs nothing
// from us (the garbage collector follows the ownerReference), and status
// updates would only cost no-op reconciles.
func podChanges() predicate.TypedPredicate[*corev1.Pod] {
	return predicate.TypedFuncs[*corev1.Pod]{
		CreateFunc: func(event.TypedCreateEvent[*corev1.Pod]) bool { return true },
		UpdateFunc: func(e event.TypedUpdateEvent[*corev1.Pod]) bool {
			return e.ObjectOld.Annotations[inject.AnnotationPeer] != e.ObjectNew.Annotations[inject.AnnotationPeer] ||
				len(e.ObjectOld.Spec.Volumes) != len(e.ObjectNew.Spec.Volumes)
		},
		DeleteFunc:  func(event.TypedDeleteEvent[*corev1.Pod]) bool { return false },
		GenericFunc: func(event.TypedGenericEvent[*corev1.Pod]) bool { return false },
	}
}

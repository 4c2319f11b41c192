package peers

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
)

// SetupWithManager adds the peer lifecycle to mgr: the package's pod cache
// (every replica), the FlyPeer controller and, unless
// Options.DisableSweeper, the sweeper (both leader only).
func SetupWithManager(mgr ctrl.Manager, opts Options) error {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return err
	}
	// The context only serves index and informer registration, which do
	// not block before the cache starts.
	ctx := context.Background()
	pods, err := newPodCache(ctx, mgr)
	if err != nil {
		return err
	}
	if _, err := pods.GetInformer(ctx, newPodMeta()); err != nil {
		return fmt.Errorf("peers: watch injected pods: %w", err)
	}
	if err := mgr.Add(cacheRunnable{pods}); err != nil {
		return fmt.Errorf("peers: add cache: %w", err)
	}
	// The webhook reads FlyPeers on every replica (reinvocations, copies).
	if _, err := mgr.GetCache().GetInformer(ctx, &glaceonv1alpha1.FlyPeer{}); err != nil {
		return fmt.Errorf("peers: watch FlyPeers: %w", err)
	}

	r := &reconciler{
		reader:    mgr.GetClient(),
		pods:      pods,
		apiReader: mgr.GetAPIReader(),
		client:    mgr.GetClient(),
		fly:       &flyOps{orgs: opts.Orgs, reader: mgr.GetClient(), timeout: opts.FlyCallTimeout},
		recorder:  mgr.GetEventRecorder(ControllerName),
		clock:     opts.Clock,
		opts:      opts,
		failures:  map[types.UID]int{},
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		For(&glaceonv1alpha1.FlyPeer{}).
		WatchesRawSource(source.Kind(pods, newPodMeta(),
			handler.TypedEnqueueRequestsFromMapFunc(flyPeerOfPod), podChanges())).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.MaxConcurrentReconciles}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("peers: build controller: %w", err)
	}

	if opts.DisableSweeper {
		return nil
	}
	now, err := apiServerClock(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return fmt.Errorf("peers: %w", err)
	}
	s := &sweeper{r: r, namer: opts.Namer, now: now, ticker: opts.Clock, opts: opts, log: mgr.GetLogger().WithName(SweeperName)}
	if err := mgr.Add(s); err != nil {
		return fmt.Errorf("peers: add sweeper: %w", err)
	}
	return nil
}

// podChanges passes pod creations (and the initial list), deletions, and
// updates that change the peer annotation: what binds a FlyPeer or ends it.
func podChanges() predicate.TypedPredicate[*metav1.PartialObjectMetadata] {
	return predicate.TypedFuncs[*metav1.PartialObjectMetadata]{
		CreateFunc: func(event.TypedCreateEvent[*metav1.PartialObjectMetadata]) bool { return true },
		UpdateFunc: func(e event.TypedUpdateEvent[*metav1.PartialObjectMetadata]) bool {
			return e.ObjectOld.Annotations[inject.AnnotationPeer] != e.ObjectNew.Annotations[inject.AnnotationPeer]
		},
		DeleteFunc:  func(event.TypedDeleteEvent[*metav1.PartialObjectMetadata]) bool { return true },
		GenericFunc: func(event.TypedGenericEvent[*metav1.PartialObjectMetadata]) bool { return false },
	}
}

package pool

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/time/rate"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/peers"
)

// Cache indexes of FlyPeers.
const (
	indexInPool    = "glaceon.fly/pool-org"
	indexClaimable = "glaceon.fly/pool-claimable"
)

func claimKey(org, region string) string { return org + "/" + region }

// SetupWithManager adds the refill controller (leader only) to mgr and
// returns the Claimer for admission (every replica).
func SetupWithManager(mgr ctrl.Manager, opts Options) (*Claimer, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	// The pool's FlyPeers by FlyOrg, and the claimable ones by FlyOrg and
	// region: claimed peers keep their label for good, and a claim or a
	// refill must not copy every one of them out of the cache.
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &glaceonv1alpha1.FlyPeer{}, indexInPool, func(o client.Object) []string {
		if fp := o.(*glaceonv1alpha1.FlyPeer); peers.InPool(fp) {
			return []string{fp.Spec.Org}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("pool: index pooled FlyPeers: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &glaceonv1alpha1.FlyPeer{}, indexClaimable, func(o client.Object) []string {
		if fp := o.(*glaceonv1alpha1.FlyPeer); claimable(fp) {
			return []string{claimKey(fp.Spec.Org, fp.Spec.Region)}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("pool: index claimable FlyPeers: %w", err)
	}
	r := &refiller{
		client:    mgr.GetClient(),
		recorder:  mgr.GetEventRecorder(ControllerName),
		opts:      opts,
		limiters:  map[string]*rate.Limiter{},
		failures:  map[string]int{},
		notBefore: map[string]time.Time{},
	}
	// A pooled FlyPeer's change (claimed, Available, deleted) is its
	// FlyOrg's pool changing. A burst of claims is one reconcile.
	orgOfPooled := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if org := o.GetLabels()[glaceonv1alpha1.LabelPool]; org != "" {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: org}}}
		}
		return nil
	})
	err := ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		For(&glaceonv1alpha1.FlyOrg{}).
		Watches(&glaceonv1alpha1.FlyPeer{}, orgOfPooled).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Complete(r)
	if err != nil {
		return nil, fmt.Errorf("pool: build controller: %w", err)
	}
	return &Claimer{
		reader:    mgr.GetClient(),
		secrets:   mgr.GetAPIReader(),
		client:    mgr.GetClient(),
		namespace: opts.Orgs.Namespace(),
		recorder:  mgr.GetEventRecorder("glaceon-webhook"),
		now:       time.Now,
		reserved:  map[string]time.Time{},
	}, nil
}

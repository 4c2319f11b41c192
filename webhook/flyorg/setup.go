package flyorg

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/glaceon/glaceon/flyapi"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
)

// Options configure SetupWithManager.
type Options struct {
	// Namespace is glaceon's own namespace, where token Secrets live.
	Namespace string
	// Fly is the template of each FlyOrg's client options (base URL,
	// gateway port, logger); the token comes from the FlyOrg's Secret.
	Fly flyapi.Options
	// RecheckInterval is how often a FlyOrg is checked again. Default 5m.
	RecheckInterval time.Duration
	// RetryInterval is how soon a check the Fly API did not answer is
	// retried. Default 30s.
	RetryInterval time.Duration
	// FlyTimeout bounds one check. Default 30s.
	FlyTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.RecheckInterval <= 0 {
		o.RecheckInterval = DefaultRecheckInterval
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	if o.FlyTimeout <= 0 {
		o.FlyTimeout = DefaultFlyTimeout
	}
}

// secretMeta is an empty metadata-only Secret.
func secretMeta() *metav1.PartialObjectMetadata {
	s := &metav1.PartialObjectMetadata{}
	s.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return s
}

// SetupWithManager adds the FlyOrg controller (leader only) and the token
// Secret cache (every replica) to mgr, and returns the Registry the webhook
// and the peer controller take their Fly clients from.
func SetupWithManager(mgr ctrl.Manager, opts Options) (*Registry, error) {
	opts.setDefaults()
	if opts.Namespace == "" {
		return nil, errors.New("flyorg: Options.Namespace is empty")
	}
	// Only glaceon's namespace, only metadata: tokens are read uncached
	// when their Secret changed.
	secrets, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient:                  mgr.GetHTTPClient(),
		Scheme:                      mgr.GetScheme(),
		Mapper:                      mgr.GetRESTMapper(),
		DefaultNamespaces:           map[string]cache.Config{opts.Namespace: {}},
		DefaultTransform:            cache.TransformStripManagedFields(),
		ReaderFailOnMissingInformer: true,
	})
	if err != nil {
		return nil, fmt.Errorf("flyorg: create the token Secret cache: %w", err)
	}
	ctx := context.Background() // informer registration does not block before start
	if _, err := secrets.GetInformer(ctx, secretMeta()); err != nil {
		return nil, fmt.Errorf("flyorg: watch token Secrets: %w", err)
	}
	if err := mgr.Add(cacheRunnable{secrets}); err != nil {
		return nil, fmt.Errorf("flyorg: add the token Secret cache: %w", err)
	}
	// The webhook reads FlyOrgs on every replica; the controller that
	// would otherwise create the informer runs on the leader only.
	if _, err := mgr.GetCache().GetInformer(ctx, &glaceonv1alpha1.FlyOrg{}); err != nil {
		return nil, fmt.Errorf("flyorg: watch FlyOrgs: %w", err)
	}
	registry := NewRegistry(opts.Namespace, secrets, mgr.GetAPIReader(), opts.Fly)

	r := &reconciler{client: mgr.GetClient(), registry: registry, recorder: mgr.GetEventRecorder(ControllerName), opts: opts, checked: map[string]lastCheck{}}
	// A FlyPeer made or gone recounts its FlyOrg's peers a moment later
	// (a burst of pods is one status write, and no Fly request).
	recount := func(fp *glaceonv1alpha1.FlyPeer, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Name: fp.Spec.Org}}, peerRecountDelay)
	}
	peerEvents := handler.TypedFuncs[*glaceonv1alpha1.FlyPeer, reconcile.Request]{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[*glaceonv1alpha1.FlyPeer], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			recount(e.Object, q)
		},
		DeleteFunc: func(_ context.Context, e event.TypedDeleteEvent[*glaceonv1alpha1.FlyPeer], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			recount(e.Object, q)
		},
	}
	// A Secret change re-checks the FlyOrgs that use it.
	orgsOfSecret := handler.TypedEnqueueRequestsFromMapFunc(func(ctx context.Context, s *metav1.PartialObjectMetadata) []reconcile.Request {
		var orgs glaceonv1alpha1.FlyOrgList
		if err := mgr.GetClient().List(ctx, &orgs); err != nil {
			return nil
		}
		var reqs []reconcile.Request
		for _, o := range orgs.Items {
			if o.Spec.TokenSecretRef.Name == s.Name {
				reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: o.Name}})
			}
		}
		return reqs
	})
	err = ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		// Status writes must not trigger a Fly check: only spec changes and
		// the deletion.
		For(&glaceonv1alpha1.FlyOrg{}, builder.WithPredicates(specOrDeletion())).
		WatchesRawSource(source.Kind(secrets, secretMeta(), orgsOfSecret, predicate.TypedResourceVersionChangedPredicate[*metav1.PartialObjectMetadata]{})).
		WatchesRawSource(source.Kind(mgr.GetCache(), &glaceonv1alpha1.FlyPeer{}, handler.TypedEventHandler[*glaceonv1alpha1.FlyPeer, reconcile.Request](peerEvents))).
		Complete(r)
	if err != nil {
		return nil, fmt.Errorf("flyorg: build controller: %w", err)
	}
	return registry, nil
}

// specOrDeletion passes creations, spec changes (generation) and the start
// of a deletion.
func specOrDeletion() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
			e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
	}}
}

// cacheRunnable puts a cache in the manager's cache group, started on
// every replica before the controllers.
type cacheRunnable struct{ cache.Cache }

// GetCache marks the runnable as a cache for the manager.
func (c cacheRunnable) GetCache() cache.Cache { return c.Cache }

var _ client.Reader = cacheRunnable{}

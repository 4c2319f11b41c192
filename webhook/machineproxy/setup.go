package machineproxy

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
)

// RBAC of the MachineProxy controller, granted in deploy/rbac. Children
// are written with server-side apply, which needs create (first apply) and
// patch. The finalizers update is what the API server asks of whoever sets
// blockOwnerDeletion on an owner reference to a MachineProxy (no finalizer
// is ever added). Pods and Secrets are not read here: peers are the
// webhook's and the peer controller's business.

// SetupWithManager adds the MachineProxy controller to mgr, on the leader
// only. It registers glaceon.fly/v1alpha1 in the manager's scheme if it is
// not there yet, and reads the children (Deployments, Services,
// PodDisruptionBudgets) through a cache of its own that holds only
// glaceon's, so cmd/glaceon needs no cache configuration for it:
//
//	err := machineproxy.SetupWithManager(mgr, machineproxy.Options{
//		Inject: injectConfig, // the webhook's inject.Config
//	})
func SetupWithManager(mgr ctrl.Manager, opts Options) error {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return err
	}
	scheme := mgr.GetScheme()
	if !scheme.Recognizes(glaceonv1alpha1.GroupVersion.WithKind("MachineProxy")) {
		if err := glaceonv1alpha1.AddToScheme(scheme); err != nil {
			return fmt.Errorf("machineproxy: register %s: %w", glaceonv1alpha1.GroupVersion, err)
		}
	}

	children, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient: mgr.GetHTTPClient(),
		Scheme:     scheme,
		Mapper:     mgr.GetRESTMapper(),
		DefaultLabelSelector: labels.SelectorFromSet(labels.Set{
			LabelComponent:        ComponentValue,
			inject.LabelManagedBy: inject.ManagedByValue,
		}),
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return fmt.Errorf("machineproxy: create cache: %w", err)
	}
	if err := mgr.Add(cacheRunnable{children}); err != nil {
		return fmt.Errorf("machineproxy: add cache: %w", err)
	}

	r := &reconciler{
		client:    mgr.GetClient(),
		children:  children,
		apiReader: mgr.GetAPIReader(),
		scheme:    scheme,
		recorder:  mgr.GetEventRecorder(ControllerName),
		opts:      opts,
	}
	owner := &glaceonv1alpha1.MachineProxy{}
	err = ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		// Status writes (ours) do not change the generation: no reconcile.
		For(owner, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Kind(children, &appsv1.Deployment{},
			handler.TypedEnqueueRequestForOwner[*appsv1.Deployment](scheme, mgr.GetRESTMapper(), owner, handler.OnlyControllerOwner()))).
		WatchesRawSource(source.Kind(children, &corev1.Service{},
			handler.TypedEnqueueRequestForOwner[*corev1.Service](scheme, mgr.GetRESTMapper(), owner, handler.OnlyControllerOwner()))).
		WatchesRawSource(source.Kind(children, &corev1.ServiceAccount{},
			handler.TypedEnqueueRequestForOwner[*corev1.ServiceAccount](scheme, mgr.GetRESTMapper(), owner, handler.OnlyControllerOwner()))).
		WatchesRawSource(source.Kind(children, &policyv1.PodDisruptionBudget{},
			handler.TypedEnqueueRequestForOwner[*policyv1.PodDisruptionBudget](scheme, mgr.GetRESTMapper(), owner, handler.OnlyControllerOwner()))).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.MaxConcurrentReconciles}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("machineproxy: build controller: %w", err)
	}
	return nil
}

// cacheRunnable puts the package's cache in the manager's cache group: it
// starts before the controllers and gates the manager's readiness.
type cacheRunnable struct{ cache.Cache }

// GetCache marks the runnable as a cache for the manager.
func (c cacheRunnable) GetCache() cache.Cache { return c.Cache }

var (
	_ reconcile.Reconciler = (*reconciler)(nil)
	_ client.Reader        = cacheRunnable{}
)

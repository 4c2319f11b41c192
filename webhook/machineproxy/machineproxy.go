package machineproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
)

// conflictRetry is how soon a name conflict is looked at again: the
// controller does not watch objects it does not own, and the other owner
// may let go (e.g. the earlier operator's Service after a migration). A
// variable for the tests.
var conflictRetry = 15 * time.Second

// reconciler reconciles MachineProxies.
type reconciler struct {
	client    client.Client // MachineProxies (manager cache) and every write
	children  client.Reader // the package's cache: labelled children only
	apiReader client.Reader // uncached, for the conflict check before a create
	scheme    *runtime.Scheme
	recorder  events.EventRecorder
	opts      Options
}

// Reconcile implements reconcile.Reconciler.
func (r *reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	mp := &glaceonv1alpha1.MachineProxy{}
	if err := r.client.Get(ctx, req.NamespacedName, mp); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !mp.DeletionTimestamp.IsZero() {
		// The children carry owner references: the garbage collector
		// deletes them, and the peer lifecycle removes each pod's Fly
		// peer with the pod. There is no finalizer of ours, so a
		// MachineProxy never waits for glaceon to be running to go away.
		return ctrl.Result{}, nil
	}
	return r.maybeProvision(ctx, mp)
}

// maybeProvision brings the children in line with the spec, then writes
// the status (deferred, so that every path reports what it saw).
func (r *reconciler) maybeProvision(ctx context.Context, mp *glaceonv1alpha1.MachineProxy) (res ctrl.Result, retErr error) {
	log := logf.FromContext(ctx)
	before := mp.DeepCopy()
	var obs observed
	defer func() {
		setStatus(mp, obs, r.opts)
		if equality.Semantic.DeepEqual(before.Status, mp.Status) {
			return
		}
		// A merge patch: the status is ours alone, so no optimistic lock
		// is needed and a stale cache never makes it fail.
		if err := r.client.Status().Patch(ctx, mp, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
			retErr = errors.Join(retErr, fmt.Errorf("update status: %w", err))
		}
	}()

	targets, invalid := validate(mp, r.opts)
	if len(invalid) > 0 {
		obs.invalid = invalid
		if d, err := r.getChild(ctx, mp, &appsv1.Deployment{}); err == nil {
			obs.deployment = d.(*appsv1.Deployment)
		}
		if c := meta.FindStatusCondition(before.Status.Conditions, glaceonv1alpha1.ConditionReady); c == nil ||
			c.Reason != ReasonInvalidSpec || c.ObservedGeneration != mp.Generation {
			// Once per generation: the status holds it from then on.
			r.recorder.Eventf(mp, nil, corev1.EventTypeWarning, ReasonInvalidSpec, "Validate", "%s", invalid.ToAggregate().Error())
			log.Info("spec cannot be served", "reason", invalid.ToAggregate().Error())
		}
		return ctrl.Result{}, nil // a new generation brings it back
	}
	obs.targets = targets

	if err := r.apply(ctx, mp, serviceAccountFor(mp), &corev1.ServiceAccount{}); err != nil {
		return r.applyFailed(ctx, mp, &obs, err)
	}
	deployment := &appsv1.Deployment{}
	if err := r.apply(ctx, mp, deploymentFor(mp, targets, r.opts), deployment); err != nil {
		return r.applyFailed(ctx, mp, &obs, err)
	}
	obs.deployment = deployment
	if err := r.apply(ctx, mp, serviceFor(mp, targets), &corev1.Service{}); err != nil {
		return r.applyFailed(ctx, mp, &obs, err)
	}
	if wantsPDB(mp) {
		if err := r.apply(ctx, mp, pdbFor(mp), &policyv1.PodDisruptionBudget{}); err != nil {
			return r.applyFailed(ctx, mp, &obs, err)
		}
	} else if err := r.deleteChild(ctx, mp, &policyv1.PodDisruptionBudget{}); err != nil {
		return r.applyFailed(ctx, mp, &obs, err)
	}
	return ctrl.Result{}, nil
}

// applyFailed records a failed write in obs: a name conflict is retried
// after conflictRetry, anything else goes back to the queue's backoff.
func (r *reconciler) applyFailed(ctx context.Context, mp *glaceonv1alpha1.MachineProxy, obs *observed, err error) (ctrl.Result, error) {
	var conflict *conflictError
	if errors.As(err, &conflict) {
		obs.conflict = conflict.Error()
		if c := meta.FindStatusCondition(mp.Status.Conditions, glaceonv1alpha1.ConditionDegraded); c == nil || c.Reason != ReasonNameConflict {
			r.recorder.Eventf(mp, nil, corev1.EventTypeWarning, ReasonNameConflict, "Provision", "%s", conflict.Error())
		}
		logf.FromContext(ctx).Info("name conflict; retrying later", "reason", conflict.Error(), "retryAfter", conflictRetry)
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	obs.applyErr = err
	return ctrl.Result{}, err
}

// conflictError: a child's name is taken by an object mp does not control.
type conflictError struct {
	kind, name, owner string
}

func (e *conflictError) Error() string {
	return fmt.Sprintf("%s %s already exists and belongs to %s; glaceon leaves it alone: delete it, or rename the MachineProxy", e.kind, e.name, e.owner)
}

// getChild reads mp's child of obj's kind (same name and namespace) from
// the package's cache.
func (r *reconciler) getChild(ctx context.Context, mp *glaceonv1alpha1.MachineProxy, obj client.Object) (client.Object, error) {
	err := r.children.Get(ctx, client.ObjectKeyFromObject(mp), obj)
	return obj, err
}

// apply writes desired with server-side apply (field manager FieldOwner)
// and decodes the API server's answer into into. It refuses to touch an
// object of the same name that mp does not control, and records Events for
// creations and for Deployment rollouts.
func (r *reconciler) apply(ctx context.Context, mp *glaceonv1alpha1.MachineProxy, desired, into client.Object) error {
	kind := desired.GetObjectKind().GroupVersionKind().Kind
	key := client.ObjectKeyFromObject(desired)
	existing := into.DeepCopyObject().(client.Object)
	found := true
	if err := r.children.Get(ctx, key, existing); apierrors.IsNotFound(err) {
		found = false
		// The cache holds labelled objects only: look for a foreign one
		// before creating (an apply would silently adopt it).
		if err := r.apiReader.Get(ctx, key, existing); err == nil {
			return &conflictError{kind: kind, name: key.Name, owner: ownerDescription(existing)}
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get %s %s: %w", kind, key.Name, err)
		}
	} else if err != nil {
		return fmt.Errorf("get %s %s: %w", kind, key.Name, err)
	}
	if found && !metav1.IsControlledBy(existing, mp) {
		return &conflictError{kind: kind, name: key.Name, owner: ownerDescription(existing)}
	}

	u, err := toApplyObject(desired)
	if err != nil {
		return err
	}
	if err := r.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s: %w", kind, key.Name, err)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		return fmt.Errorf("decode applied %s %s: %w", kind, key.Name, err)
	}

	log := logf.FromContext(ctx)
	switch {
	case !found:
		log.Info("created child", "kind", kind, "child", key.Name)
		r.recorder.Eventf(mp, into, corev1.EventTypeNormal, ReasonCreated, "Provision", "created %s %s", kind, key.Name)
	case kind == "Deployment" && into.GetGeneration() != existing.GetGeneration():
		log.Info("rolling out", "kind", kind, "child", key.Name, "generation", into.GetGeneration())
		r.recorder.Eventf(mp, into, corev1.EventTypeNormal, ReasonRollingOut, "Provision",
			"Deployment %s changed (generation %d): pods are replaced or scaled, each new pod with its own Fly peer", key.Name, into.GetGeneration())
	}
	return nil
}

// deleteChild deletes mp's child of obj's kind if it exists and mp
// controls it.
func (r *reconciler) deleteChild(ctx context.Context, mp *glaceonv1alpha1.MachineProxy, obj client.Object) error {
	if _, err := r.getChild(ctx, mp, obj); apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if !metav1.IsControlledBy(obj, mp) {
		return nil
	}
	if err := r.client.Delete(ctx, obj, client.Preconditions{UID: ptrUID(obj)}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete %T %s: %w", obj, obj.GetName(), err)
	}
	kind := fmt.Sprintf("%T", obj)
	if gvks, _, err := r.scheme.ObjectKinds(obj); err == nil && len(gvks) > 0 {
		kind = gvks[0].Kind
	}
	logf.FromContext(ctx).Info("deleted child", "kind", kind, "child", obj.GetName())
	r.recorder.Eventf(mp, nil, corev1.EventTypeNormal, ReasonDeleted, "Provision", "deleted %s %s: not needed with %d replica(s)", kind, obj.GetName(), replicasOf(mp))
	return nil
}

func ptrUID(obj client.Object) *types.UID {
	uid := obj.GetUID()
	return &uid
}

// ownerDescription names who controls obj, for conflict messages.
func ownerDescription(obj client.Object) string {
	if ref := metav1.GetControllerOf(obj); ref != nil {
		return fmt.Sprintf("%s %s (uid %s)", ref.Kind, ref.Name, ref.UID)
	}
	return "no MachineProxy (it has no controller)"
}

// toApplyObject turns a builder's typed object into an apply request. JSON
// drops the zero values the builders left unset (omitempty), so the apply
// only claims the fields glaceon means to own; the server-set fields that
// typed objects always carry are removed.
func toApplyObject(obj client.Object) (*unstructured.Unstructured, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", obj, err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("decode %T: %w", obj, err)
	}
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "creationTimestamp")
	return u, nil
}

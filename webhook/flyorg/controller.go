package flyorg

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/glaceon/glaceon/flyapi"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
)

// reconciler checks FlyOrgs against the Fly API and writes their status.
type reconciler struct {
	client   client.Client // FlyOrgs and FlyPeers from the manager's cache; status writes
	registry *Registry
	recorder events.EventRecorder
	opts     Options

	// checked remembers each FlyOrg's last Fly check, so that a reconcile
	// that only recounts FlyPeers costs no Fly request. In memory: a new
	// leader checks every FlyOrg once, which is what "at start" means.
	mu      sync.Mutex
	checked map[string]lastCheck
}

type lastCheck struct {
	generation    int64
	secretVersion string
	at            time.Time
	reason        string
}

// check is the outcome of checking one FlyOrg.
type check struct {
	status  metav1.ConditionStatus
	reason  string
	message string
	orgID   string
}

// Reconcile: Get → NotFound → deletion (wait for the FlyOrg's FlyPeers) →
// finalizer → check → status.
func (r *reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	var org glaceonv1alpha1.FlyOrg
	if err := r.client.Get(ctx, req.NamespacedName, &org); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get FlyOrg: %w", err)
	}
	if !org.DeletionTimestamp.IsZero() {
		return r.deleting(ctx, &org)
	}
	if !controllerutil.ContainsFinalizer(&org, FinalizerFlyPeers) {
		orig := org.DeepCopy()
		controllerutil.AddFinalizer(&org, FinalizerFlyPeers)
		if err := r.client.Patch(ctx, &org, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer %s: %w", FinalizerFlyPeers, err)
		}
	}

	peers, err := r.countPeers(ctx, org.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	version := r.registry.SecretVersion(ctx, &org)
	r.mu.Lock()
	last, ok := r.checked[org.Name]
	r.mu.Unlock()
	interval := r.opts.RecheckInterval
	if last.reason == ReasonFlyUnavailable {
		interval = r.opts.RetryInterval
	}
	if ok && last.generation == org.Generation && last.secretVersion == version && meta.FindStatusCondition(org.Status.Conditions, glaceonv1alpha1.ConditionReady) != nil {
		if wait := interval - time.Since(last.at); wait > 0 {
			// Only the FlyPeer count may have changed.
			if org.Status.Peers != peers {
				org.Status.Peers = peers
				if err := r.client.Status().Update(ctx, &org); err != nil {
					return ctrl.Result{}, fmt.Errorf("update FlyOrg status: %w", err)
				}
			}
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}

	c := r.check(ctx, &org)
	if ctx.Err() != nil {
		return ctrl.Result{}, ctx.Err()
	}
	r.mu.Lock()
	r.checked[org.Name] = lastCheck{generation: org.Generation, secretVersion: version, at: time.Now(), reason: c.reason}
	r.mu.Unlock()

	before := org.Status.DeepCopy()
	prev := meta.FindStatusCondition(org.Status.Conditions, glaceonv1alpha1.ConditionReady)
	wasTrue := prev != nil && prev.Status == metav1.ConditionTrue
	meta.SetStatusCondition(&org.Status.Conditions, metav1.Condition{
		Type: glaceonv1alpha1.ConditionReady, Status: c.status, Reason: c.reason, Message: c.message, ObservedGeneration: org.Generation,
	})
	org.Status.ObservedGeneration = org.Generation
	if c.orgID != "" {
		org.Status.OrganizationID = c.orgID
	}
	org.Status.Peers = peers
	if !apiequality.Semantic.DeepEqual(before, &org.Status) {
		if err := r.client.Status().Update(ctx, &org); err != nil {
			return ctrl.Result{}, fmt.Errorf("update FlyOrg status: %w", err)
		}
	}
	if c.status != metav1.ConditionTrue && (prev == nil || wasTrue || prev.Reason != c.reason) {
		r.recorder.Eventf(&org, nil, corev1.EventTypeWarning, c.reason, "Check", "FlyOrg %s is not ready: %s", org.Name, c.message)
	}
	log.V(1).Info("checked FlyOrg", "ready", c.status, "reason", c.reason)

	if c.reason == ReasonFlyUnavailable {
		return ctrl.Result{RequeueAfter: r.opts.RetryInterval}, nil
	}
	return ctrl.Result{RequeueAfter: r.opts.RecheckInterval}, nil
}

// deleting lets a deleted FlyOrg go once none of its FlyPeers is left: until
// then their finalizers need its token to remove their Fly peers.
func (r *reconciler) deleting(ctx context.Context, org *glaceonv1alpha1.FlyOrg) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(org, FinalizerFlyPeers) {
		return ctrl.Result{}, nil
	}
	n, err := r.countPeers(ctx, org.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if n > 0 {
		msg := fmt.Sprintf("deleted; waiting for its %d FlyPeers to go (they go with their pods) so that their Fly peers are removed with this FlyOrg's token", n)
		if cond := meta.FindStatusCondition(org.Status.Conditions, glaceonv1alpha1.ConditionReady); cond == nil || cond.Reason != ReasonDeleting || org.Status.Peers != n {
			meta.SetStatusCondition(&org.Status.Conditions, metav1.Condition{
				Type: glaceonv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonDeleting, Message: msg, ObservedGeneration: org.Generation,
			})
			org.Status.Peers = n
			if err := r.client.Status().Update(ctx, org); err != nil && !apierrors.IsNotFound(err) {
				return ctrl.Result{}, fmt.Errorf("update FlyOrg status: %w", err)
			}
		}
		return ctrl.Result{RequeueAfter: deletionRecheck}, nil
	}
	orig := org.DeepCopy()
	controllerutil.RemoveFinalizer(org, FinalizerFlyPeers)
	if err := r.client.Patch(ctx, org, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("remove finalizer %s: %w", FinalizerFlyPeers, err)
	}
	return ctrl.Result{}, nil
}

// check validates the spec, reads the token and looks the org up at Fly.
func (r *reconciler) check(ctx context.Context, org *glaceonv1alpha1.FlyOrg) check {
	for i, pat := range org.Spec.Namespaces {
		if _, err := path.Match(pat, ""); err != nil {
			return check{status: metav1.ConditionFalse, reason: ReasonInvalidSpec,
				message: fmt.Sprintf("spec.namespaces[%d] %q is not a path.Match pattern: %v", i, pat, err)}
		}
	}
	fly, err := r.registry.Client(ctx, org)
	if err != nil {
		var te *TokenError
		if errors.As(err, &te) {
			return check{status: metav1.ConditionFalse, reason: te.Reason, message: te.Message}
		}
		return check{status: metav1.ConditionFalse, reason: ReasonTokenSecretInvalid, message: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.FlyTimeout)
	defer cancel()
	slug := org.SlugOrName()
	source := r.registry.TokenSource(org)
	found, err := fly.Organization(ctx, slug)
	switch {
	case err == nil && found != nil && found.ID != "":
		return check{status: metav1.ConditionTrue, reason: ReasonReady, orgID: found.ID,
			message: fmt.Sprintf("the token in %s is accepted and Fly org %q is found", source, slug)}
	case err == nil:
		return check{status: metav1.ConditionFalse, reason: ReasonFlyUnavailable,
			message: fmt.Sprintf("the Fly API answered the lookup of org %q without an ID; checked again in %s", slug, r.opts.RetryInterval)}
	case flyapi.IsUnauthorized(err):
		return check{status: metav1.ConditionFalse, reason: ReasonUnauthorized,
			message: fmt.Sprintf("the Fly API rejected the token in %s: %v; replace it with a token of org %q (`fly tokens create org -o %s`)", source, err, slug, slug)}
	case flyapi.IsNotFound(err):
		return check{status: metav1.ConditionFalse, reason: ReasonOrgNotFound,
			message: fmt.Sprintf("Fly org %q is not found with the token in %s: fix spec.slug (see `fly orgs list`) or use a token of that org: %v", slug, source, err)}
	default:
		return check{status: metav1.ConditionFalse, reason: ReasonFlyUnavailable,
			message: fmt.Sprintf("the Fly API did not answer the lookup of org %q: %v; checked again in %s", slug, err, r.opts.RetryInterval)}
	}
}

func (r *reconciler) countPeers(ctx context.Context, org string) (int32, error) {
	var list glaceonv1alpha1.FlyPeerList
	if err := r.client.List(ctx, &list); err != nil {
		return 0, fmt.Errorf("list FlyPeers: %w", err)
	}
	var n int32
	for i := range list.Items {
		if list.Items[i].Spec.Org == org {
			n++
		}
	}
	return n, nil
}

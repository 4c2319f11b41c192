package peers

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/glaceon/glaceon/flyapi"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
)

// reconciler binds FlyPeers to their pods, deletes a FlyPeer whose pod is
// gone, and through the finalizer removes the Fly peer and then the pod's
// Secret. Nothing in a tenant namespace other than the pod itself (its
// existence and UID) is ever read.
type reconciler struct {
	reader    client.Reader // the manager's cache: FlyPeers, FlyOrgs
	pods      client.Reader // the package's cache: injected pods, metadata only
	apiReader client.Reader // uncached confirmations
	client    client.Client // writes
	fly       *flyOps
	recorder  events.EventRecorder
	clock     clock.PassiveClock
	opts      Options

	// failures counts consecutive failed removals per FlyPeer, for the
	// backoff. In memory: a restart starts the backoff again, which is fine.
	mu       sync.Mutex
	failures map[types.UID]int
}

// Reconcile follows the usual recipe: Get → NotFound → deletion → bind.
func (r *reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx).WithValues("flypeer", req.Name)
	ctx = logf.IntoContext(ctx, log)

	fp := &glaceonv1alpha1.FlyPeer{}
	if err := r.reader.Get(ctx, req.NamespacedName, fp); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get FlyPeer: %w", err)
	}
	if !fp.DeletionTimestamp.IsZero() {
		if !controllerutil.ContainsFinalizer(fp, FinalizerFlyPeer) {
			r.forget(fp.UID)
			return ctrl.Result{}, nil
		}
		return r.release(ctx, fp)
	}
	if InPool(fp) {
		return ctrl.Result{}, nil // the pool's refill keeps it; the sweeper a stuck one
	}
	if fp.Spec.Pod.UID != "" {
		gone, err := r.podGone(ctx, fp)
		if err != nil {
			return ctrl.Result{}, err
		}
		if gone {
			log.Info("pod of FlyPeer is gone; deleting the FlyPeer", "namespace", fp.Spec.Pod.Namespace, "pod", fp.Spec.Pod.Name)
			return ctrl.Result{}, r.deleteFlyPeer(ctx, fp, false)
		}
		return ctrl.Result{}, r.setPhase(ctx, fp, glaceonv1alpha1.FlyPeerBound)
	}
	return ctrl.Result{}, r.maybeBind(ctx, fp)
}

// maybeBind binds an unbound FlyPeer to the pod that claims it, if it
// exists yet. Unclaimed FlyPeers are the sweeper's.
func (r *reconciler) maybeBind(ctx context.Context, fp *glaceonv1alpha1.FlyPeer) error {
	pods := newPodMetaList()
	if err := r.pods.List(ctx, pods, client.InNamespace(fp.Spec.Pod.Namespace), client.MatchingFields{indexPodPeer: fp.Name}); err != nil {
		return fmt.Errorf("list pods of FlyPeer: %w", err)
	}
	var pod *metav1.PartialObjectMetadata
	for i := range pods.Items {
		p := &pods.Items[i]
		// Several claimants only by hand; the first one stored wins.
		if claims(fp, p) && (pod == nil || p.CreationTimestamp.Before(&pod.CreationTimestamp)) {
			pod = p
		}
	}
	if pod == nil {
		return nil
	}
	orig := fp.DeepCopy()
	fp.Spec.Pod.Name, fp.Spec.Pod.UID = pod.Name, pod.UID
	if err := r.client.Patch(ctx, fp, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("bind FlyPeer to pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	logf.FromContext(ctx).V(1).Info("bound FlyPeer to its pod", "namespace", pod.Namespace, "pod", pod.Name)
	if IsPooled(fp) {
		// The pod's Secret holds the key now (admission wrote it before
		// answering): the pool's copy has no use left.
		if err := r.deletePoolSecret(ctx, fp); err != nil {
			return err
		}
	}
	return r.setPhase(ctx, fp, glaceonv1alpha1.FlyPeerBound)
}

// podGone reports whether the pod a bound FlyPeer names is gone: not in
// the cache, and confirmed by the API server (the cache may lag, and a
// pod whose injected label was removed is not cached but still runs).
func (r *reconciler) podGone(ctx context.Context, fp *glaceonv1alpha1.FlyPeer) (bool, error) {
	key := types.NamespacedName{Namespace: fp.Spec.Pod.Namespace, Name: fp.Spec.Pod.Name}
	pod := newPodMeta()
	err := r.pods.Get(ctx, key, pod)
	if err == nil && pod.UID == fp.Spec.Pod.UID {
		return false, nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("get pod %s: %w", key, err)
	}
	pod = newPodMeta()
	switch err := r.apiReader.Get(ctx, key, pod); {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("get pod %s: %w", key, err)
	default:
		return pod.UID != fp.Spec.Pod.UID, nil
	}
}

// deleteFlyPeer deletes fp if it has not changed since it was judged (the
// preconditions let a FlyPeer bound in the meantime survive).
func (r *reconciler) deleteFlyPeer(ctx context.Context, fp *glaceonv1alpha1.FlyPeer, unclaimed bool) error {
	uid, rv := fp.UID, fp.ResourceVersion
	err := r.client.Delete(ctx, &glaceonv1alpha1.FlyPeer{ObjectMeta: metav1.ObjectMeta{Name: fp.Name}}, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return nil // gone, or changed: judged again
	case err != nil:
		return fmt.Errorf("delete FlyPeer %s: %w", fp.Name, err)
	}
	if unclaimed {
		peersOrphaned.WithLabelValues(kindFlyPeer).Inc()
		r.recorder.Eventf(fp, nil, corev1.EventTypeNormal, ReasonUnclaimed, eventActionSweep,
			"no pod in namespace %s claimed FlyPeer %s within %s; deleted it, its finalizer removes the Fly peer", fp.Spec.Pod.Namespace, fp.Name, r.opts.Grace)
	}
	return nil
}

// setPhase writes the phase into the status if it differs.
func (r *reconciler) setPhase(ctx context.Context, fp *glaceonv1alpha1.FlyPeer, phase glaceonv1alpha1.FlyPeerPhase) error {
	if fp.Status.Phase == phase {
		return nil
	}
	orig := fp.DeepCopy()
	fp.Status.Phase = phase
	if err := r.client.Status().Patch(ctx, fp, client.MergeFrom(orig)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("set FlyPeer phase %s: %w", phase, err)
	}
	return nil
}

// release removes the Fly peer of a deleted FlyPeer, then the pod's
// Secret, then the finalizer. While the Fly API fails it retries with
// backoff; after RemovalDeadline it lets the FlyPeer go with a
// PeerRemovalAbandoned Event, and the sweeper removes the Fly peer once the
// API answers (the name is this cluster's and no FlyPeer names it).
func (r *reconciler) release(ctx context.Context, fp *glaceonv1alpha1.FlyPeer) (ctrl.Result, error) {
	log := logf.FromContext(ctx).WithValues("org", fp.Spec.Org)
	err := r.fly.removePeer(ctx, fp)
	if err == nil {
		if err := r.deleteSecret(ctx, fp); err != nil {
			return ctrl.Result{}, err
		}
		if err := r.releaseFinalizer(ctx, fp); err != nil {
			return ctrl.Result{}, err
		}
		log.Info("removed Fly peer of deleted FlyPeer")
		return ctrl.Result{}, nil
	}
	if ctx.Err() != nil {
		return ctrl.Result{}, ctx.Err() // shutting down
	}

	elapsed := r.clock.Since(fp.DeletionTimestamp.Time)
	if elapsed >= r.opts.RemovalDeadline {
		removalAbandoned.Inc()
		r.recorder.Eventf(fp, nil, corev1.EventTypeWarning, ReasonPeerRemovalAbandoned, eventActionRemove,
			"could not remove Fly peer %s of FlyOrg %s for %s (last error: %v); releasing the FlyPeer; the sweeper removes the peer once the Fly API answers",
			fp.Name, fp.Spec.Org, elapsed.Round(time.Second), err)
		log.Error(err, "gave up removing Fly peer; released the FlyPeer for the sweeper", "elapsed", elapsed.String())
		if err := r.deleteSecret(ctx, fp); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.releaseFinalizer(ctx, fp)
	}

	reason := ReasonPeerRemovalFailed
	switch {
	case flyapi.IsUnauthorized(err):
		reason = ReasonPeerRemovalUnauthorized
		r.recorder.Eventf(fp, nil, corev1.EventTypeWarning, reason, eventActionRemove,
			"Fly API refused to remove peer %s with the token of FlyOrg %s (removing peers needs an org token or one from `fly tokens create wireguard`); retrying until %s after deletion: %v",
			fp.Name, fp.Spec.Org, r.opts.RemovalDeadline, err)
	case !flyapi.IsRetryable(err) && !isContextDeadline(err):
		r.recorder.Eventf(fp, nil, corev1.EventTypeWarning, reason, eventActionRemove,
			"could not remove Fly peer %s of FlyOrg %s; retrying until %s after deletion: %v", fp.Name, fp.Spec.Org, r.opts.RemovalDeadline, err)
	}
	r.markReleasing(ctx, fp, reason, err)
	delay := r.backoff(fp.UID)
	if left := r.opts.RemovalDeadline - elapsed; delay > left {
		delay = left // give up on time, not up to one backoff late
	}
	log.Error(err, "could not remove Fly peer; retrying", "retryAfter", delay.String())
	return ctrl.Result{RequeueAfter: delay}, nil
}

// markReleasing shows a stuck removal in the status (best effort).
func (r *reconciler) markReleasing(ctx context.Context, fp *glaceonv1alpha1.FlyPeer, reason string, cause error) {
	orig := fp.DeepCopy()
	fp.Status.Phase = glaceonv1alpha1.FlyPeerReleasing
	meta.SetStatusCondition(&fp.Status.Conditions, metav1.Condition{
		Type: glaceonv1alpha1.ConditionFlyPeerRemoved, Status: metav1.ConditionFalse, Reason: reason,
		Message: fmt.Sprintf("removing the Fly peer failed: %v; retrying until %s after deletion", cause, r.opts.RemovalDeadline),
	})
	_ = r.client.Status().Patch(ctx, fp, client.MergeFrom(orig))
}

// deleteSecret deletes the pod's Secret (it holds the private key of a peer
// that no longer exists). Gone is fine.
// A pooled peer's key Secret in glaceon's namespace goes too.
func (r *reconciler) deleteSecret(ctx context.Context, fp *glaceonv1alpha1.FlyPeer) error {
	if IsPooled(fp) {
		if err := r.deletePoolSecret(ctx, fp); err != nil {
			return err
		}
	}
	if fp.Spec.Pod.Namespace == "" {
		return nil // never claimed: no pod's Secret
	}
	return r.deleteSecretIn(ctx, fp.Spec.Pod.Namespace, fp.Name)
}

// deletePoolSecret deletes the key Secret of a pooled peer, in glaceon's
// namespace.
func (r *reconciler) deletePoolSecret(ctx context.Context, fp *glaceonv1alpha1.FlyPeer) error {
	return r.deleteSecretIn(ctx, r.fly.orgs.Namespace(), fp.Name)
}

func (r *reconciler) deleteSecretIn(ctx context.Context, namespace, name string) error {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := r.client.Delete(ctx, s); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

// releaseFinalizer removes our finalizer (and only ours).
func (r *reconciler) releaseFinalizer(ctx context.Context, fp *glaceonv1alpha1.FlyPeer) error {
	orig := fp.DeepCopy()
	if !controllerutil.RemoveFinalizer(fp, FinalizerFlyPeer) {
		return nil
	}
	if err := r.client.Patch(ctx, fp, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(fp.UID)
			return nil
		}
		// A conflict brings the FlyPeer back; removing again is idempotent.
		return fmt.Errorf("remove finalizer %s: %w", FinalizerFlyPeer, err)
	}
	r.forget(fp.UID)
	return nil
}

// backoff returns the delay before the next removal attempt and counts the
// failure: RetryBaseDelay doubling up to RetryMaxDelay.
func (r *reconciler) backoff(uid types.UID) time.Duration {
	r.mu.Lock()
	n := r.failures[uid]
	r.failures[uid] = n + 1
	r.mu.Unlock()
	return BackoffDelay(n, r.opts.RetryBaseDelay, r.opts.RetryMaxDelay)
}

// BackoffDelay is the delay after failures consecutive failures: base
// doubling up to limit.
func BackoffDelay(failures int, base, limit time.Duration) time.Duration {
	d := base
	for i := 0; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func (r *reconciler) forget(uid types.UID) {
	r.mu.Lock()
	delete(r.failures, uid)
	r.mu.Unlock()
}

package peers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/webhook/inject"
)

// secretReconciler binds peer Secrets to their pods and, through the
// finalizer, removes the Fly peer of a deleted Secret.
type secretReconciler struct {
	cache    client.Reader // the package's cache: peer Secrets, injected pods
	client   client.Client // writes (not cached)
	fly      *flyOps
	recorder events.EventRecorder
	clock    clock.PassiveClock
	opts     Options

	// failures counts consecutive failed removals per Secret, for the
	// backoff. In memory: a restart starts the backoff again, which is fine.
	mu       sync.Mutex
	failures map[types.UID]int
}

// Reconcile follows the usual recipe: Get → NotFound → deletion → provision.
func (r *secretReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx).WithValues("secret", req.NamespacedName)
	ctx = logf.IntoContext(ctx, log)

	secret := newSecretMeta()
	if err := r.cache.Get(ctx, req.NamespacedName, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get peer secret: %w", err)
	}
	secret.SetGroupVersionKind(secretGVK) // for the patches
	if !isPeerSecret(secret) {
		return ctrl.Result{}, nil
	}
	if !secret.DeletionTimestamp.IsZero() {
		if !controllerutil.ContainsFinalizer(secret, inject.FinalizerPeerCleanup) {
			r.forget(secret.UID)
			return ctrl.Result{}, nil
		}
		return r.maybeCleanup(ctx, secret)
	}
	return ctrl.Result{}, r.maybeBind(ctx, secret)
}

// maybeBind makes sure a live peer Secret carries the finalizer and an
// ownerReference to every pod claiming it, so the garbage collector deletes
// it with its pod. A Secret no pod claims yet is left alone: the pod watch
// brings it back when its pod appears, and the sweeper handles it if none
// ever does.
func (r *secretReconciler) maybeBind(ctx context.Context, secret *metav1.PartialObjectMetadata) error {
	log := logf.FromContext(ctx)
	peer, org := peerOf(secret)

	var pods corev1.PodList
	if err := r.cache.List(ctx, &pods, client.InNamespace(secret.Namespace), client.MatchingFields{indexPodPeer: peer}); err != nil {
		return fmt.Errorf("list pods claiming peer secret: %w", err)
	}

	orig := secret.DeepCopy()
	// The webhook adds the finalizer at creation; re-add it if someone
	// dropped it from a live Secret, or its peer would leak.
	changed := controllerutil.AddFinalizer(secret, inject.FinalizerPeerCleanup)
	var bound []string
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !claims(pod, secret.Name, peer) || hasOwnerUID(secret, pod.UID) {
			continue
		}
		secret.OwnerReferences = append(secret.OwnerReferences, podOwnerRef(pod))
		bound = append(bound, pod.Name)
		changed = true
	}
	if !changed {
		return nil
	}
	// Optimistic lock: the ownerReferences and finalizers lists are
	// replaced whole by a merge patch.
	patch := client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})
	if err := r.client.Patch(ctx, secret, patch); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			// The newer version (or the deletion) is on its way through
			// the watch and triggers another reconcile.
			log.V(1).Info("peer secret changed while binding; waiting for the new version")
			return nil
		}
		return fmt.Errorf("bind peer secret to its pod: %w", err)
	}
	for _, pod := range bound {
		// Printed once per binding.
		log.Info("bound peer secret to its pod", "pod", pod, "peer", peer, "org", org)
	}
	return nil
}

func hasOwnerUID(o client.Object, uid types.UID) bool {
	return slices.ContainsFunc(o.GetOwnerReferences(), func(r metav1.OwnerReference) bool { return r.UID == uid })
}

// maybeCleanup removes the Fly peer of a deleting Secret, then the finalizer.
// While the Fly API fails it retries with backoff until RemovalDeadline after
// the deletionTimestamp; then it lets go with an Event, and the sweeper
// removes the peer once the API answers (the peer has our prefix and no
// Secret any more).
func (r *secretReconciler) maybeCleanup(ctx context.Context, secret *metav1.PartialObjectMetadata) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	peer, org := peerOf(secret)
	log = log.WithValues("peer", peer, "org", org)
	ref := eventRef(secret)

	if org == "" {
		r.recorder.Eventf(ref, nil, corev1.EventTypeWarning, ReasonPeerLabelsMissing, eventActionRemove,
			"peer secret has no %s label, so its Fly peer %q cannot be located; releasing the secret (the sweeper removes peers of the configured orgs that have no secret)",
			inject.LabelPeerOrg, peer)
		log.Info("peer secret has no org label; releasing it without removing the Fly peer")
		return ctrl.Result{}, r.releaseFinalizer(ctx, secret)
	}

	err := r.fly.removePeer(ctx, org, peer)
	if err == nil {
		if err := r.releaseFinalizer(ctx, secret); err != nil {
			return ctrl.Result{}, err
		}
		log.Info("removed Fly peer of deleted secret")
		return ctrl.Result{}, nil
	}
	if ctx.Err() != nil {
		return ctrl.Result{}, ctx.Err() // shutting down
	}

	elapsed := r.clock.Since(secret.DeletionTimestamp.Time)
	if elapsed >= r.opts.RemovalDeadline {
		removalAbandoned.Inc()
		next := "the peer sweeper will remove the peer once the Fly API answers"
		if !r.swept(org, peer) {
			next = fmt.Sprintf("the peer sweeper does not cover it (org not in its list or name without its prefix): remove it with `glaceon peer remove --org %s --name %s`", org, peer)
		}
		r.recorder.Eventf(ref, nil, corev1.EventTypeWarning, ReasonPeerRemovalAbandoned, eventActionRemove,
			"could not remove Fly peer %q in org %q for %s (last error: %v); releasing the secret so its deletion is not blocked; %s",
			peer, org, elapsed.Round(time.Second), err, next)
		log.Error(err, "gave up removing Fly peer; released the secret for the sweeper", "elapsed", elapsed.String())
		return ctrl.Result{}, r.releaseFinalizer(ctx, secret)
	}

	switch {
	case flyapi.IsUnauthorized(err):
		r.recorder.Eventf(ref, nil, corev1.EventTypeWarning, ReasonPeerRemovalUnauthorized, eventActionRemove,
			"Fly API refused to remove peer %q in org %q: the token lacks permission (removing peers needs an org token or one from `fly tokens create wireguard`); retrying until %s after deletion: %v",
			peer, org, r.opts.RemovalDeadline, err)
	case !flyapi.IsRetryable(err) && !isTimeout(err):
		r.recorder.Eventf(ref, nil, corev1.EventTypeWarning, ReasonPeerRemovalFailed, eventActionRemove,
			"could not remove Fly peer %q in org %q; retrying until %s after deletion: %v",
			peer, org, r.opts.RemovalDeadline, err)
	}
	delay := r.backoff(secret.UID)
	if left := r.opts.RemovalDeadline - elapsed; delay > left {
		delay = left // give up on time, not up to one backoff late
	}
	log.Error(err, "could not remove Fly peer; retrying", "retryAfter", delay.String())
	return ctrl.Result{RequeueAfter: delay}, nil
}

// swept reports whether the sweeper would remove the peer once orphaned.
func (r *secretReconciler) swept(org, peer string) bool {
	return !r.opts.DisableSweeper && r.opts.Prefix != "" && strings.HasPrefix(peer, r.opts.Prefix) && slices.Contains(r.opts.Orgs, org)
}

func isTimeout(err error) bool {
	return err != nil && (apierrors.IsTimeout(err) || isContextDeadline(err))
}

// releaseFinalizer removes our finalizer (and only ours) from the Secret.
func (r *secretReconciler) releaseFinalizer(ctx context.Context, secret *metav1.PartialObjectMetadata) error {
	orig := secret.DeepCopy()
	if !controllerutil.RemoveFinalizer(secret, inject.FinalizerPeerCleanup) {
		return nil
	}
	patch := client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})
	if err := r.client.Patch(ctx, secret, patch); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(secret.UID)
			return nil
		}
		// A conflict brings the Secret back; removing the peer again is
		// idempotent.
		return fmt.Errorf("remove finalizer %s: %w", inject.FinalizerPeerCleanup, err)
	}
	r.forget(secret.UID)
	return nil
}

// backoff returns the delay before the next removal attempt of a Secret and
// counts the failure: RetryBaseDelay doubling up to RetryMaxDelay.
func (r *secretReconciler) backoff(uid types.UID) time.Duration {
	r.mu.Lock()
	n := r.failures[uid]
	r.failures[uid] = n + 1
	r.mu.Unlock()
	return backoffDelay(n, r.opts.RetryBaseDelay, r.opts.RetryMaxDelay)
}

func backoffDelay(failures int, base, limit time.Duration) time.Duration {
	d := base
	for i := 0; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func (r *secretReconciler) forget(uid types.UID) {
	r.mu.Lock()
	delete(r.failures, uid)
	r.mu.Unlock()
}

// eventRef is what Events about a peer Secret refer to. A typed object
// resolves its kind through the scheme; the metadata-only one may not.
func eventRef(s *metav1.PartialObjectMetadata) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion,
	}}
}

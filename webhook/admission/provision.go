package admission

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	"github.com/glaceon/glaceon/webhook/inject"
)

// rollbackTimeout bounds the clean-up of a half-made peer after a failed
// admission; what it cannot remove is left to the sweeper.
const rollbackTimeout = 10 * time.Second

// provisionError carries a denial message and a metrics reason.
type provisionError struct {
	reason string
	msg    string
	err    error
}

func (e *provisionError) Error() string { return e.msg }
func (e *provisionError) Unwrap() error { return e.err }

func failureReason(err error) string {
	var pe *provisionError
	if errors.As(err, &pe) {
		return pe.reason
	}
	return "internal"
}

// provision creates the pod's Fly peer and the Secret holding its wg-quick
// file, in that order; on any failure it removes what it made.
func (h *Handler) provision(ctx context.Context, log logr.Logger, pod *corev1.Pod, namespace string, req inject.Request) (inject.Peer, error) {
	flyCtx, cancel := context.WithTimeout(ctx, h.opts.FlyTimeout)
	defer cancel()

	org, err := h.opts.Fly.CachedOrganization(flyCtx, req.Org)
	if err != nil {
		return inject.Peer{}, h.flyFailure("organization", req.Org, err)
	}
	keys, err := wgquick.GenerateKeyPair()
	if err != nil {
		return inject.Peer{}, &provisionError{reason: "internal", msg: "generate WireGuard key pair: " + err.Error(), err: err}
	}
	name := PeerName(h.opts.PeerPrefix, pod, namespace)
	created, err := h.opts.Fly.AddPeer(flyCtx, flyapi.AddPeerInput{Org: *org, Name: name, PublicKey: keys.Public, Region: req.Region})
	if err != nil {
		return inject.Peer{}, h.flyFailure("addWireGuardPeer", req.Org, err)
	}
	peersCreated.Inc()
	peer := inject.Peer{Name: name, SecretName: name}

	cfg, err := flyapi.NewWireGuardConfig(keys.Private, *created, h.opts.GatewayPort)
	if err == nil {
		err = h.createSecret(ctx, namespace, req.Org, peer, cfg.Render())
	}
	if err != nil {
		h.rollback(log, namespace, req.Org, peer)
		return inject.Peer{}, &provisionError{reason: "secret", msg: fmt.Sprintf("store the WireGuard config of peer %s in a Secret in namespace %s: %v; the peer was removed again, retrying is safe", name, namespace, err), err: err}
	}
	return peer, nil
}

func (h *Handler) createSecret(ctx context.Context, namespace, org string, peer inject.Peer, wgQuick []byte) error {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      peer.SecretName,
			Namespace: namespace,
			Labels: map[string]string{
				inject.LabelManagedBy: inject.ManagedByValue,
				inject.LabelPeerName:  peer.Name,
				inject.LabelPeerOrg:   org,
			},
			Finalizers: []string{inject.FinalizerPeerCleanup},
		},
		Type:      corev1.SecretTypeOpaque,
		Immutable: ptr.To(true),
		Data:      map[string][]byte{inject.SecretKeyWGConfig: wgQuick},
	}
	return h.opts.Client.Create(ctx, secret)
}

// rollback removes a peer made for an admission that then failed: the
// Secret (dropping its finalizer, since the peer is removed here) and the
// Fly peer. It runs on its own deadline, as the admission's may be spent.
func (h *Handler) rollback(log logr.Logger, namespace, orgSlug string, peer inject.Peer) {
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	var errs []error
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: peer.SecretName, Namespace: namespace}}
	if err := h.opts.Client.Get(ctx, clientKey(secret), secret); err == nil {
		secret.Finalizers = nil
		if err := h.opts.Client.Update(ctx, secret); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("drop finalizer of secret: %w", err))
		}
		if err := h.opts.Client.Delete(ctx, secret); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete secret: %w", err))
		}
	} else if !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("get secret: %w", err))
	}
	if org, err := h.opts.Fly.CachedOrganization(ctx, orgSlug); err != nil {
		errs = append(errs, err)
	} else if err := h.opts.Fly.RemovePeer(ctx, *org, peer.Name); err != nil {
		errs = append(errs, fmt.Errorf("remove Fly peer: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		peersRolledBack.WithLabelValues("failed").Inc()
		log.Error(err, "roll back peer failed; the sweeper will remove it", "peer", peer.Name, "org", orgSlug)
		return
	}
	peersRolledBack.WithLabelValues("removed").Inc()
	log.Info("rolled back peer", "peer", peer.Name, "org", orgSlug)
}

// flyFailure turns a Fly API error into a denial that says what to do.
func (h *Handler) flyFailure(op, org string, err error) error {
	var msg, reason string
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		reason = "fly_timeout"
		msg = fmt.Sprintf("Fly API did not answer within %s (%s); retrying is safe", h.opts.FlyTimeout, op)
	case flyapi.IsUnauthorized(err):
		reason = "fly_unauthorized"
		msg = fmt.Sprintf("Fly API rejected the token in %s (%s): replace it with a token that may manage WireGuard peers in org %q (`fly tokens create org %s`)", h.opts.TokenSource, op, org, org)
	case flyapi.IsNotFound(err) && op == "organization":
		reason = "fly_org_not_found"
		msg = fmt.Sprintf("Fly org %q not found (or the token in %s cannot see it): fix %s on the pod or the webhook's default org", org, h.opts.TokenSource, inject.AnnotationOrg)
	case flyapi.IsRateLimited(err) || flyapi.IsTransient(err):
		reason = "fly_unavailable"
		msg = fmt.Sprintf("Fly API is unavailable (%s): %v; retrying is safe", op, err)
	default:
		reason = "fly_error"
		msg = fmt.Sprintf("Fly API call %s failed: %v", op, err)
	}
	return &provisionError{reason: reason, msg: msg, err: err}
}

func clientKey(s *corev1.Secret) client.ObjectKey {
	return client.ObjectKey{Namespace: s.Namespace, Name: s.Name}
}

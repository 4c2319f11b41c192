package admission

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/flyorg"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/peers"
)

// errCrashed ends an admission at a TestHook step.
var errCrashed = errors.New("admission ended at a test hook, as if the manager died")

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

func (h *Handler) step(name string, pod *corev1.Pod) error {
	if h.opts.TestHook == nil {
		return nil
	}
	if err := h.opts.TestHook(name, podDisplayName(pod)); err != nil {
		return fmt.Errorf("%w (%s): %v", errCrashed, name, err)
	}
	return nil
}

// provision makes the pod's peer, write-ahead: the FlyPeer first (so the
// cluster knows of the Fly peer before it can exist), then the Fly peer,
// then the Secret with the wg-quick file, then the FlyPeer's status. On a
// failure it undoes what it made within the admission's deadline.
func (h *Handler) provision(ctx context.Context, log logr.Logger, fly flyorg.FlyAPI, org *glaceonv1alpha1.FlyOrg, pod *corev1.Pod, namespace string, req inject.Request) (inject.Peer, *glaceonv1alpha1.FlyPeer, error) {
	keys, err := wgquick.GenerateKeyPair()
	if err != nil {
		return inject.Peer{}, nil, &provisionError{reason: "internal", msg: "generate WireGuard key pair: " + err.Error(), err: err}
	}
	name := h.opts.Namer.New(pod, namespace)
	if err := h.step(StepBeforeFlyPeer, pod); err != nil {
		return inject.Peer{}, nil, err
	}
	fp := peers.NewFlyPeer(name, org.Name, req.Region, keys.Public, namespace)
	if err := h.opts.Client.Create(ctx, fp); err != nil {
		return inject.Peer{}, nil, &provisionError{reason: "flypeer", err: err,
			msg: fmt.Sprintf("record FlyPeer %s: %v; nothing was created at Fly, retrying is safe", name, err)}
	}
	if err := h.step(StepAfterFlyPeer, pod); err != nil {
		return inject.Peer{}, nil, err
	}

	flyCtx, cancel := context.WithTimeout(ctx, h.opts.FlyTimeout)
	created, err := fly.AddPeer(flyCtx, flyapi.AddPeerInput{
		Org:  flyapi.Organization{ID: org.Status.OrganizationID, Slug: org.SlugOrName()},
		Name: name, PublicKey: keys.Public, Region: req.Region,
	})
	cancel()
	if err != nil {
		h.rollback(ctx, log, fp, false)
		return inject.Peer{}, nil, h.flyFailure("addWireGuardPeer", org, err)
	}
	peersCreated.Inc()
	if err := h.step(StepAfterFly, pod); err != nil {
		return inject.Peer{}, nil, err
	}

	peer := inject.Peer{Name: name, SecretName: name}
	cfg, err := flyapi.NewWireGuardConfig(keys.Private, *created, h.opts.GatewayPort)
	if err == nil {
		err = h.opts.Client.Create(ctx, peers.NewPeerSecret(fp, cfg.Render()))
	}
	if err != nil {
		h.rollback(ctx, log, fp, false)
		return inject.Peer{}, nil, &provisionError{reason: "secret", err: err,
			msg: fmt.Sprintf("store the WireGuard config of peer %s in a Secret in namespace %s: %v; the peer is being removed again, retrying is safe", name, namespace, err)}
	}
	if err := h.step(StepAfterSecret, pod); err != nil {
		return inject.Peer{}, nil, err
	}

	// Best effort: the FlyPeer controller binds a Provisioning FlyPeer to
	// its pod all the same, and removal falls back to the FlyOrg's ID.
	orig := fp.DeepCopy()
	fp.Status = glaceonv1alpha1.FlyPeerStatus{Phase: glaceonv1alpha1.FlyPeerReady, PeerIP: created.PeerIP.String(), OrganizationID: org.Status.OrganizationID}
	if err := h.opts.Client.Status().Patch(ctx, fp, client.MergeFrom(orig)); err != nil {
		log.Error(err, "could not mark FlyPeer ready", "flypeer", name)
	}
	return peer, fp, nil
}

// rollback undoes a peer made for an admission that then failed: the
// Secret (if made) and the FlyPeer, whose finalizer removes the Fly peer
// outside the admission. It runs on what is left of the admission's
// deadline; what it cannot do there is the sweeper's (an unclaimed
// FlyPeer past the grace period).
func (h *Handler) rollback(ctx context.Context, log logr.Logger, fp *glaceonv1alpha1.FlyPeer, secret bool) {
	var errs []error
	if secret {
		s := &corev1.Secret{}
		s.Namespace, s.Name = fp.Spec.Pod.Namespace, fp.Name
		if err := h.opts.Client.Delete(ctx, s); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete secret: %w", err))
		}
	}
	if err := h.opts.Client.Delete(ctx, &glaceonv1alpha1.FlyPeer{ObjectMeta: fp.ObjectMeta}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete FlyPeer: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		peersRolledBack.WithLabelValues("failed").Inc()
		log.Error(err, "roll back peer failed; the sweeper will remove it", "flypeer", fp.Name)
		return
	}
	peersRolledBack.WithLabelValues("removed").Inc()
	log.Info("rolled back peer; its FlyPeer's finalizer removes the Fly peer", "flypeer", fp.Name)
}

// flyFailure turns a Fly API error into a denial that names the FlyOrg and
// says what to do.
func (h *Handler) flyFailure(op string, org *glaceonv1alpha1.FlyOrg, err error) error {
	source := h.opts.Orgs.TokenSource(org)
	var msg, reason string
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		reason = "fly_timeout"
		msg = fmt.Sprintf("Fly API did not answer within %s (%s, FlyOrg %s); retrying is safe", h.opts.FlyTimeout, op, org.Name)
	case flyapi.IsUnauthorized(err):
		reason = "fly_unauthorized"
		msg = fmt.Sprintf("Fly API rejected the token of FlyOrg %s (%s; %s): ask a cluster admin to replace it with a token that may manage WireGuard peers in org %q (`fly tokens create org -o %s`)", org.Name, source, op, org.SlugOrName(), org.SlugOrName())
	case flyapi.IsRateLimited(err) || flyapi.IsTransient(err):
		reason = "fly_unavailable"
		msg = fmt.Sprintf("Fly API is unavailable (%s, FlyOrg %s): %v; retrying is safe", op, org.Name, err)
	default:
		reason = "fly_error"
		msg = fmt.Sprintf("Fly API call %s failed (FlyOrg %s): %v", op, org.Name, err)
	}
	return &provisionError{reason: reason, msg: msg, err: err}
}

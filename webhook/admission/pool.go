package admission

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/peers"
	"github.com/glaceon/glaceon/webhook/pool"
)

// claim gives the pod a pooled peer, without a Fly call: the claim (a
// compare-and-swap on the FlyPeer), then the pod's Secret with the
// peer's wg-quick file. A nil FlyPeer and no error: no pool, or nothing
// left in it; the caller makes a peer at Fly.
func (h *Handler) claim(ctx context.Context, log logr.Logger, org *glaceonv1alpha1.FlyOrg, pod *corev1.Pod, namespace string, req inject.Request) (inject.Peer, *glaceonv1alpha1.FlyPeer, error) {
	if h.opts.Pool == nil || !pool.Pooled(org, req.Region) {
		return inject.Peer{}, nil, nil
	}
	if err := h.step(StepBeforeClaim, pod); err != nil {
		return inject.Peer{}, nil, err
	}
	claimed, err := h.opts.Pool.Claim(ctx, org, req.Region, namespace)
	if err != nil {
		// Fly may well answer where the API server just did not.
		log.Error(err, "could not claim a pooled peer; making one at Fly")
		return inject.Peer{}, nil, nil
	}
	if claimed == nil {
		return inject.Peer{}, nil, nil
	}
	fp := claimed.FlyPeer
	if err := h.step(StepAfterClaim, pod); err != nil {
		return inject.Peer{}, nil, err
	}
	err = h.opts.Client.Create(ctx, peers.NewPeerSecret(fp, claimed.WGQuick))
	clear(claimed.WGQuick)
	if err != nil {
		// Never back to the pool: the FlyPeer goes, its finalizer removes
		// the Fly peer and the pooled key.
		h.rollback(ctx, log, fp, false)
		return inject.Peer{}, nil, &provisionError{reason: "secret", err: err,
			msg: fmt.Sprintf("store the WireGuard config of peer %s in a Secret in namespace %s: %v; the peer is being removed again, retrying is safe", fp.Name, namespace, err)}
	}
	if err := h.step(StepAfterSecret, pod); err != nil {
		return inject.Peer{}, nil, err
	}
	return inject.Peer{Name: fp.Name, SecretName: fp.Name}, fp, nil
}

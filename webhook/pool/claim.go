package pool

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/peers"
)

// maxClaimAttempts bounds the peers one claim tries: each lost race (or
// stale cache entry) costs one patch. Past it admission calls Fly.
const maxClaimAttempts = 8

// Claimer hands pooled peers to admissions. Safe for concurrent use; runs
// on every replica.
type Claimer struct {
	reader    client.Reader // the manager's cache: FlyPeers
	secrets   client.Reader // uncached: pooled key Secrets in namespace
	client    client.Client
	namespace string
	recorder  events.EventRecorder
	now       func() time.Time

	// reserved holds the peers this replica is claiming or has claimed,
	// until its cache has surely seen the claim: concurrent admissions on
	// one replica then never race each other for a peer.
	mu       sync.Mutex
	reserved map[string]time.Time
}

// reservation is how long a claimed peer stays reserved: far above the
// cache's lag.
const reservation = time.Minute

// Claimed is a pooled peer claimed for a pod.
type Claimed struct {
	// FlyPeer is the claimed FlyPeer, spec.pod.namespace set.
	FlyPeer *glaceonv1alpha1.FlyPeer
	// WGQuick is the peer's wg-quick file, for the pod's Secret.
	WGQuick []byte
}

// Pooled reports whether org keeps a pool for region (the region a pod
// asks for, defaults applied).
func Pooled(org *glaceonv1alpha1.FlyOrg, region string) bool {
	return slices.Contains(org.PoolRegions(), region)
}

// Claim takes an Available pooled peer of org in region for a pod in
// namespace. It returns nil (and records a fallback, with an Event on the
// FlyOrg) when none is left or every try lost its race: admission then
// makes a peer at Fly. An error means the Kubernetes API failed; nothing
// is claimed then (a peer claimed before the failure is deleted again, or
// left for the sweeper).
func (c *Claimer) Claim(ctx context.Context, org *glaceonv1alpha1.FlyOrg, region, namespace string) (*Claimed, error) {
	if !Pooled(org, region) {
		return nil, nil
	}
	tried := map[string]bool{}
	for range maxClaimAttempts {
		fp, err := c.pick(ctx, org.Name, region, tried)
		if err != nil {
			return nil, err
		}
		if fp == nil {
			break
		}
		tried[fp.Name] = true
		won, err := c.take(ctx, fp, namespace)
		if err != nil {
			return nil, err
		}
		if !won {
			claims.WithLabelValues(org.Name, ResultConflictRetry).Inc()
			continue
		}
		wg, err := c.key(ctx, fp)
		if err != nil {
			c.discard(ctx, fp)
			if apierrors.IsNotFound(err) || len(wg) == 0 {
				continue // key Secret gone: that peer is unusable, try another
			}
			return nil, err
		}
		claims.WithLabelValues(org.Name, ResultPool).Inc()
		return &Claimed{FlyPeer: fp, WGQuick: wg}, nil
	}
	claims.WithLabelValues(org.Name, ResultFallback).Inc()
	if c.recorder != nil {
		c.recorder.Eventf(org, nil, corev1.EventTypeWarning, ReasonPoolEmpty, "Claim",
			"no Available pooled peer in region %s for a pod in namespace %s: its peer is made at Fly (slower, and impossible while the Fly API is down); raise spec.pool.size if this repeats", regionName(region), namespace)
	}
	return nil, nil
}

// pick chooses one Available pooled peer at random from the cache (so
// that concurrent claims, on one replica or several, rarely race for the
// same one), skipping tried.
// It reserves the one it returns.
func (c *Claimer) pick(ctx context.Context, org, region string, tried map[string]bool) (*glaceonv1alpha1.FlyPeer, error) {
	var list glaceonv1alpha1.FlyPeerList
	// Read-only view of the cache; the chosen one is copied.
	if err := c.reader.List(ctx, &list, client.MatchingFields{indexClaimable: claimKey(org, region)}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list pooled FlyPeers of FlyOrg %s: %w", org, err)
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, at := range c.reserved {
		if now.Sub(at) > reservation {
			delete(c.reserved, name)
		}
	}
	var free []*glaceonv1alpha1.FlyPeer
	for i := range list.Items {
		fp := &list.Items[i]
		if _, taken := c.reserved[fp.Name]; !taken && claimable(fp) && !tried[fp.Name] {
			free = append(free, fp)
		}
	}
	if len(free) == 0 {
		return nil, nil
	}
	fp := free[rand.IntN(len(free))].DeepCopy()
	c.reserved[fp.Name] = now
	return fp, nil
}

// claimable reports whether fp can be claimed.
func claimable(fp *glaceonv1alpha1.FlyPeer) bool {
	return peers.InPool(fp) && fp.DeletionTimestamp.IsZero() && fp.Status.Phase == glaceonv1alpha1.FlyPeerAvailable
}

// take is the compare-and-swap: the patch carries the resourceVersion fp
// was read with, so it fails with a conflict if anyone (another replica's
// claim, a rotation's deletion) changed fp since. won is false then.
func (c *Claimer) take(ctx context.Context, fp *glaceonv1alpha1.FlyPeer, namespace string) (bool, error) {
	orig := fp.DeepCopy()
	fp.Spec.Pod.Namespace = namespace
	if fp.Annotations == nil {
		fp.Annotations = map[string]string{}
	}
	fp.Annotations[glaceonv1alpha1.AnnotationClaimedAt] = c.now().UTC().Format(time.RFC3339)
	err := c.client.Patch(ctx, fp, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsConflict(err), apierrors.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("claim pooled FlyPeer %s: %w", fp.Name, err)
	}
}

// key reads the claimed peer's wg-quick file from its Secret in glaceon's
// namespace, uncached (no Secret is ever cached).
func (c *Claimer) key(ctx context.Context, fp *glaceonv1alpha1.FlyPeer) ([]byte, error) {
	var s corev1.Secret
	if err := c.secrets.Get(ctx, client.ObjectKey{Namespace: c.namespace, Name: fp.Name}, &s); err != nil {
		return nil, fmt.Errorf("read the key Secret %s/%s of pooled FlyPeer %s: %w", c.namespace, fp.Name, fp.Name, err)
	}
	return s.Data[inject.SecretKeyWGConfig], nil
}

// discard deletes a claimed FlyPeer admission cannot use (its finalizer
// removes the Fly peer and the key Secret). A failure leaves it to the
// sweeper: claimed, and no pod names it.
func (c *Claimer) discard(ctx context.Context, fp *glaceonv1alpha1.FlyPeer) {
	_ = c.client.Delete(ctx, &glaceonv1alpha1.FlyPeer{ObjectMeta: metav1.ObjectMeta{Name: fp.Name}})
}

func regionName(region string) string {
	if region == "" {
		return "(Fly's choice)"
	}
	return region
}

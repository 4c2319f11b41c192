package peers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/glaceon/glaceon/webhook/inject"
)

// sweeper periodically removes what admission created but no pod used:
// unclaimed peer Secrets, and Fly peers with our prefix and no Secret. It is
// a leader-only manager Runnable.
type sweeper struct {
	cache     cache.Cache   // peer Secrets (metadata), injected pods
	apiReader client.Reader // uncached double checks before deleting
	client    client.Client // deletes
	fly       *flyOps
	recorder  events.EventRecorder
	clock     clock.WithTicker
	opts      Options
	log       logr.Logger

	// orphans remembers when each Fly peer (org/name) was first seen
	// without a Secret. Only the sweeper goroutine touches it.
	orphans orphanTracker
}

// NeedLeaderElection: only the leader sweeps.
func (s *sweeper) NeedLeaderElection() bool { return true }

// Start sweeps every SweepInterval until ctx ends.
func (s *sweeper) Start(ctx context.Context) error {
	ctx = logf.IntoContext(ctx, s.log)
	if !s.cache.WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("peer sweeper: cache did not sync")
	}
	s.log.Info("starting peer sweeper", "interval", s.opts.SweepInterval.String(), "grace", s.opts.Grace.String(),
		"prefix", s.opts.Prefix, "orgs", s.opts.Orgs)
	for {
		if err := s.sweep(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Error(err, "peer sweep incomplete; retrying next interval")
		} else {
			lastSweep.Set(float64(s.clock.Now().Unix()))
		}
		t := s.clock.NewTimer(s.opts.SweepInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

// sweep runs both halves once and joins their errors.
func (s *sweeper) sweep(ctx context.Context) error {
	secrets := newSecretMetaList()
	if err := s.cache.List(ctx, secrets); err != nil {
		return fmt.Errorf("list peer secrets: %w", err)
	}
	errSecrets := s.sweepSecrets(ctx, secrets.Items)
	errFly := s.sweepFly(ctx, secrets.Items)
	return errors.Join(errSecrets, errFly)
}

// sweepSecrets deletes peer Secrets older than Grace that no live pod owns or
// claims. Their finalizer then removes the Fly peer. A Secret with an owner
// other than a pod belongs to another lifecycle and is left alone.
func (s *sweeper) sweepSecrets(ctx context.Context, secrets []metav1.PartialObjectMetadata) error {
	now := s.clock.Now()
	byNS := map[string][]*metav1.PartialObjectMetadata{}
	for i := range secrets {
		sec := &secrets[i]
		if !isPeerSecret(sec) || !sec.DeletionTimestamp.IsZero() || now.Sub(sec.CreationTimestamp.Time) < s.opts.Grace {
			continue
		}
		owners, other := podOwnerUIDs(sec)
		if other {
			continue
		}
		live, err := s.claimedInCache(ctx, sec, owners)
		if err != nil {
			return err
		}
		if !live {
			byNS[sec.Namespace] = append(byNS[sec.Namespace], sec)
		}
	}

	var errs []error
	for ns, candidates := range byNS {
		// The cache may lag: confirm against the API server before deleting
		// a Secret a running pod might mount. Orphans are rare, so this
		// uncached list is too.
		var pods corev1.PodList
		if err := s.apiReader.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			errs = append(errs, fmt.Errorf("list pods in namespace %s: %w", ns, err))
			continue
		}
		for _, sec := range candidates {
			if stillClaimed(sec, pods.Items) {
				continue
			}
			errs = append(errs, s.deleteUnclaimed(ctx, sec))
		}
	}
	return errors.Join(errs...)
}

// claimedInCache reports whether a cached pod claims sec or is one of its
// pod owners (by UID).
func (s *sweeper) claimedInCache(ctx context.Context, sec *metav1.PartialObjectMetadata, owners []types.UID) (bool, error) {
	peer, _ := peerOf(sec)
	var pods corev1.PodList
	if err := s.cache.List(ctx, &pods, client.InNamespace(sec.Namespace), client.MatchingFields{indexPodPeer: peer}); err != nil {
		return false, fmt.Errorf("list pods claiming peer secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	for i := range pods.Items {
		if claims(&pods.Items[i], sec.Name, peer) {
			return true, nil
		}
	}
	for _, uid := range owners {
		// Owners may have lost the injected label; check them by name.
		for _, ref := range sec.OwnerReferences {
			if ref.UID != uid {
				continue
			}
			var pod corev1.Pod
			err := s.cache.Get(ctx, types.NamespacedName{Namespace: sec.Namespace, Name: ref.Name}, &pod)
			if err == nil && pod.UID == uid {
				return true, nil
			}
		}
	}
	return false, nil
}

// stillClaimed is the conservative, authoritative check: any pod that owns
// the Secret, names its peer, or mounts it keeps it.
func stillClaimed(sec *metav1.PartialObjectMetadata, pods []corev1.Pod) bool {
	peer, _ := peerOf(sec)
	owners, _ := podOwnerUIDs(sec)
	for i := range pods {
		p := &pods[i]
		if p.Annotations[inject.AnnotationPeer] == peer || mountsSecret(p, sec.Name) {
			return true
		}
		for _, uid := range owners {
			if p.UID == uid {
				return true
			}
		}
	}
	return false
}

// deleteUnclaimed deletes sec if it has not changed since it was judged: the
// preconditions make a Secret bound in the meantime survive.
func (s *sweeper) deleteUnclaimed(ctx context.Context, sec *metav1.PartialObjectMetadata) error {
	peer, org := peerOf(sec)
	log := logf.FromContext(ctx).WithValues("secret", types.NamespacedName{Namespace: sec.Namespace, Name: sec.Name}, "peer", peer, "org", org)
	obj := newSecretMeta()
	obj.Namespace, obj.Name = sec.Namespace, sec.Name
	uid, rv := sec.UID, sec.ResourceVersion
	err := s.client.Delete(ctx, obj, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return nil // gone, or changed: judged again next sweep
	case err != nil:
		return fmt.Errorf("delete unclaimed peer secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	peersOrphaned.WithLabelValues(kindSecret).Inc()
	age := s.clock.Since(sec.CreationTimestamp.Time).Round(time.Second)
	log.Info("deleted peer secret no pod claimed", "age", age.String())
	s.recorder.Eventf(eventRef(sec), nil, corev1.EventTypeNormal, ReasonUnclaimedSecretDeleted, eventActionSweep,
		"no pod claimed peer secret (Fly peer %q in org %q) within %s; deleted it, its finalizer removes the peer",
		peer, org, s.opts.Grace)
	return nil
}

// sweepFly removes Fly peers of the configured orgs whose name has our prefix
// and that no peer Secret names, once seen orphaned on sweeps at least Grace
// apart. Names, not (org, name) pairs, are matched: a Secret naming the peer
// in any org keeps it, which errs on the safe side of slug aliases.
func (s *sweeper) sweepFly(ctx context.Context, secrets []metav1.PartialObjectMetadata) error {
	if s.opts.Prefix == "" || len(s.opts.Orgs) == 0 {
		return nil
	}
	known := make(map[string]bool, len(secrets))
	for i := range secrets {
		peer, _ := peerOf(&secrets[i])
		known[peer] = true
	}
	log := logf.FromContext(ctx)
	var errs []error
	for _, org := range s.opts.Orgs {
		peers, err := s.fly.listPeers(ctx, org)
		if err != nil {
			// Keep what we know of this org: an outage must not restart
			// the grace period, nor shorten it.
			errs = append(errs, fmt.Errorf("list Fly peers of org %q: %w", org, err))
			continue
		}
		now := s.clock.Now()
		var orphans []string
		for _, p := range peers {
			if strings.HasPrefix(p.Name, s.opts.Prefix) && !known[p.Name] {
				orphans = append(orphans, p.Name)
			}
		}
		for _, name := range s.orphans.observe(org, orphans, now, s.opts.Grace) {
			if err := s.removeOrphan(ctx, org, name); err != nil {
				errs = append(errs, err)
				continue
			}
			s.orphans.forget(org, name)
			log.Info("removed Fly peer that has no secret", "peer", name, "org", org)
		}
	}
	return errors.Join(errs...)
}

// removeOrphan re-checks with the API server that no Secret names the peer,
// then removes it.
func (s *sweeper) removeOrphan(ctx context.Context, org, name string) error {
	list := newSecretMetaList()
	if err := s.apiReader.List(ctx, list, client.MatchingLabels{inject.LabelPeerName: name}, client.Limit(1)); err != nil {
		return fmt.Errorf("check secrets of Fly peer %q: %w", name, err)
	}
	if len(list.Items) > 0 {
		s.orphans.forget(org, name)
		return nil
	}
	if err := s.fly.removePeer(ctx, org, name); err != nil {
		return fmt.Errorf("remove orphaned Fly peer %q in org %q: %w", name, org, err)
	}
	peersOrphaned.WithLabelValues(kindFly).Inc()
	return nil
}

// orphanTracker remembers when Fly peers were first seen without a Secret.
type orphanTracker struct {
	first map[string]time.Time // key org + "/" + name
}

// observe records the orphans of org seen at now, forgets the org's peers
// that are no longer orphans (or gone), and returns the names orphaned for
// at least grace, in the order given.
func (t *orphanTracker) observe(org string, orphans []string, now time.Time, grace time.Duration) []string {
	if t.first == nil {
		t.first = map[string]time.Time{}
	}
	seen := make(map[string]bool, len(orphans))
	var due []string
	for _, name := range orphans {
		k := org + "/" + name
		seen[k] = true
		first, ok := t.first[k]
		if !ok {
			t.first[k] = now
			continue
		}
		if now.Sub(first) >= grace {
			due = append(due, name)
		}
	}
	prefix := org + "/"
	for k := range t.first {
		if strings.HasPrefix(k, prefix) && !seen[k] {
			delete(t.first, k)
		}
	}
	return due
}

func (t *orphanTracker) forget(org, name string) { delete(t.first, org+"/"+name) }

// len is the number of tracked orphans (tests).
func (t *orphanTracker) len() int { return len(t.first) }

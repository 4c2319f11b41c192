package peers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/glaceon/glaceon/flyapi"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
)

// sweeper periodically removes what admission started but no pod took:
// FlyPeers unclaimed past the grace period (admission died between its
// steps, or the pod was rejected after it), bound FlyPeers whose pod went
// unseen, and Fly peers with this cluster's exact name pattern that no
// FlyPeer names. Nothing else at Fly is touched. A leader-only Runnable.
type sweeper struct {
	r      *reconciler
	namer  *Namer
	now    func(context.Context) (time.Time, error) // the API server's clock
	ticker clock.WithTicker
	opts   Options
	log    logr.Logger
}

// NeedLeaderElection: only the leader sweeps.
func (s *sweeper) NeedLeaderElection() bool { return true }

// Start sweeps every SweepInterval until ctx ends.
func (s *sweeper) Start(ctx context.Context) error {
	ctx = logf.IntoContext(ctx, s.log)
	s.log.Info("starting peer sweeper", "interval", s.opts.SweepInterval.String(), "grace", s.opts.Grace.String(), "pattern", s.namer.Pattern())
	for {
		if err := s.sweep(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Error(err, "peer sweep incomplete; retrying next interval")
		} else {
			lastSweep.Set(float64(time.Now().Unix()))
		}
		t := s.ticker.NewTimer(s.opts.SweepInterval)
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
	var fps glaceonv1alpha1.FlyPeerList
	if err := s.r.reader.List(ctx, &fps); err != nil {
		return fmt.Errorf("list FlyPeers: %w", err)
	}
	errFlyPeers := s.sweepFlyPeers(ctx, fps.Items)
	known := make(map[string]bool, len(fps.Items))
	for i := range fps.Items {
		known[fps.Items[i].Name] = true
	}
	return errors.Join(errFlyPeers, s.sweepFly(ctx, known))
}

// sweepFlyPeers deletes FlyPeers no pod claimed within Grace (measured
// against the API server's clock: creationTimestamp is its time) and bound
// FlyPeers whose pod is gone although no event said so (the pod lost its
// injected label, or an event was missed).
func (s *sweeper) sweepFlyPeers(ctx context.Context, fps []glaceonv1alpha1.FlyPeer) error {
	now, err := s.now(ctx)
	if err != nil {
		return fmt.Errorf("read the API server's clock: %w", err)
	}
	var errs []error
	for i := range fps {
		fp := &fps[i]
		if !fp.DeletionTimestamp.IsZero() {
			continue
		}
		if fp.Spec.Pod.UID != "" {
			pod := newPodMeta()
			if err := s.r.pods.Get(ctx, client.ObjectKey{Namespace: fp.Spec.Pod.Namespace, Name: fp.Spec.Pod.Name}, pod); err == nil && pod.UID == fp.Spec.Pod.UID {
				continue
			}
			gone, err := s.r.podGone(ctx, fp)
			if err == nil && gone {
				err = s.r.deleteFlyPeer(ctx, fp, false)
			}
			errs = append(errs, err)
			continue
		}
		if InPool(fp) {
			if fp.Status.Phase == glaceonv1alpha1.FlyPeerAvailable || now.Sub(fp.CreationTimestamp.Time) < s.opts.Grace {
				continue // the pool's
			}
			// A refill that died between its steps: no pod can claim it.
			logf.FromContext(ctx).Info("deleting pooled FlyPeer left in provisioning", "flypeer", fp.Name, "phase", fp.Status.Phase)
			errs = append(errs, s.r.deleteFlyPeer(ctx, fp, false))
			continue
		}
		if now.Sub(unclaimedSince(fp)) < s.opts.Grace {
			continue
		}
		claimed, err := s.claimedUncached(ctx, fp)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if claimed {
			continue // the controller binds it
		}
		logf.FromContext(ctx).Info("deleting FlyPeer no pod claimed", "flypeer", fp.Name, "namespace", fp.Spec.Pod.Namespace,
			"phase", fp.Status.Phase, "age", now.Sub(fp.CreationTimestamp.Time).Round(time.Second).String())
		errs = append(errs, s.r.deleteFlyPeer(ctx, fp, true))
	}
	return errors.Join(errs...)
}

// unclaimedSince is when fp began to wait for its pod: its creation, or
// for a pooled peer the claim (written with the manager's clock; MinGrace
// leaves room for skew).
func unclaimedSince(fp *glaceonv1alpha1.FlyPeer) time.Time {
	since := fp.CreationTimestamp.Time
	if at, err := time.Parse(time.RFC3339, fp.Annotations[glaceonv1alpha1.AnnotationClaimedAt]); err == nil && at.After(since) {
		since = at
	}
	return since
}

// claimedUncached is the authoritative check before deleting an unbound
// FlyPeer: does any pod of its namespace, labelled or not, name it?
// Orphans are rare, so this uncached list is too.
func (s *sweeper) claimedUncached(ctx context.Context, fp *glaceonv1alpha1.FlyPeer) (bool, error) {
	pods := newPodMetaList()
	if err := s.r.apiReader.List(ctx, pods, client.InNamespace(fp.Spec.Pod.Namespace)); err != nil {
		return false, fmt.Errorf("list pods in namespace %s: %w", fp.Spec.Pod.Namespace, err)
	}
	return slices.ContainsFunc(pods.Items, func(p metav1.PartialObjectMetadata) bool { return p.Annotations[inject.AnnotationPeer] == fp.Name }), nil
}

// sweepFly lists each org that has a FlyOrg once and removes the Fly peers
// whose names are this cluster's (Namer.Ours) and that no FlyPeer names,
// checked uncached. FlyPeers are written before the Fly call, so such a
// peer is never an admission in flight.
func (s *sweeper) sweepFly(ctx context.Context, known map[string]bool) error {
	var orgs glaceonv1alpha1.FlyOrgList
	if err := s.r.reader.List(ctx, &orgs); err != nil {
		return fmt.Errorf("list FlyOrgs: %w", err)
	}
	log := logf.FromContext(ctx)
	var errs []error
	for _, org := range OrgsToList(orgs.Items) {
		id := org.Status.OrganizationID
		fly, err := s.r.fly.orgs.Client(ctx, org)
		if err != nil {
			errs = append(errs, fmt.Errorf("FlyOrg %s: %w", org.Name, err))
			continue
		}
		peers, err := s.r.fly.listPeers(ctx, fly, org.SlugOrName())
		if err != nil {
			errs = append(errs, fmt.Errorf("list Fly peers of FlyOrg %s: %w", org.Name, err))
			continue
		}
		for _, p := range s.namer.Orphans(peers, known) {
			var fp glaceonv1alpha1.FlyPeer
			err := s.r.apiReader.Get(ctx, client.ObjectKey{Name: p.Name}, &fp)
			if err == nil {
				continue // created since the cached list
			}
			if !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("check FlyPeer %s: %w", p.Name, err))
				continue
			}
			if err := s.r.fly.removeByName(ctx, fly, id, p.Name); err != nil {
				errs = append(errs, fmt.Errorf("remove orphaned Fly peer %s of FlyOrg %s: %w", p.Name, org.Name, err))
				continue
			}
			peersOrphaned.WithLabelValues(kindFly).Inc()
			log.Info("removed Fly peer of this cluster that has no FlyPeer", "peer", p.Name, "flyorg", org.Name)
		}
	}
	return errors.Join(errs...)
}

// OrgsToList are the FlyOrgs whose orgs a sweep lists, in name order: the
// first FlyOrg of each organization ID, none whose org is not found yet
// (no ID: not checked). `glaceon doctor` lists the same.
func OrgsToList(orgs []glaceonv1alpha1.FlyOrg) []*glaceonv1alpha1.FlyOrg {
	sorted := make([]*glaceonv1alpha1.FlyOrg, 0, len(orgs))
	for i := range orgs {
		sorted = append(sorted, &orgs[i])
	}
	slices.SortFunc(sorted, func(a, b *glaceonv1alpha1.FlyOrg) int { return strings.Compare(a.Name, b.Name) })
	listed := map[string]bool{} // organization IDs
	out := sorted[:0]
	for _, org := range sorted {
		id := org.Status.OrganizationID
		if id == "" || listed[id] {
			continue // not checked yet, or the same org under another FlyOrg
		}
		listed[id] = true
		out = append(out, org)
	}
	return out
}

// Orphans are the Fly peers with this cluster's names (Ours) that no
// FlyPeer in known names: what a sweep removes, after checking uncached
// that no FlyPeer was created since. `glaceon doctor` reports the same.
func (n *Namer) Orphans(peers []flyapi.Peer, known map[string]bool) []flyapi.Peer {
	var out []flyapi.Peer
	for _, p := range peers {
		if n.Ours(p.Name) && !known[p.Name] {
			out = append(out, p)
		}
	}
	return out
}

// apiServerClock reads the API server's clock from the Date header of a
// GET /version (readable by everyone). Ages of objects are then measured on
// the clock that stamped them, so a skewed manager clock cannot make a
// young FlyPeer look old. The header has one-second resolution and is
// rounded down, which errs towards younger.
func apiServerClock(cfg *rest.Config, hc *http.Client) (func(context.Context) (time.Time, error), error) {
	base, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("API server URL: %w", err)
	}
	url := base.JoinPath("/version").String()
	return func(ctx context.Context) (time.Time, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return time.Time{}, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return time.Time{}, err
		}
		resp.Body.Close()
		date, err := http.ParseTime(resp.Header.Get("Date"))
		if err != nil {
			return time.Time{}, fmt.Errorf("API server sent no usable Date header (%q): %w", resp.Header.Get("Date"), err)
		}
		return date, nil
	}, nil
}

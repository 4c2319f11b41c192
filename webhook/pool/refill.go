package pool

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/flyorg"
	"github.com/glaceon/glaceon/webhook/peers"
)

// errStopped ends a refill at a TestHook step.
var errStopped = errors.New("refill ended at a test hook, as if the manager died")

// refiller keeps every FlyOrg's pool at its size: the leader's controller,
// one FlyOrg at a time per worker.
type refiller struct {
	client   client.Client // FlyOrgs and FlyPeers from the manager's cache; writes
	recorder events.EventRecorder
	opts     Options

	// Per FlyOrg, in memory: a new leader starts with a full bucket and no
	// backoff, which costs at most one failed call.
	mu        sync.Mutex
	limiters  map[string]*rate.Limiter
	failures  map[string]int
	notBefore map[string]time.Time
}

// regionPool is what one region of a pool holds.
type regionPool struct {
	fresh, expired []*glaceonv1alpha1.FlyPeer
	inFlight       int
	added          int
}

func (p *regionPool) available() int32 { return int32(len(p.fresh) + len(p.expired) + p.added) }

// Reconcile: Get → NotFound → count the pool → drop what is not wanted →
// refill (rate-limited, backing off while Fly fails) → rotate → status.
func (r *refiller) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	var org glaceonv1alpha1.FlyOrg
	if err := r.client.Get(ctx, req.NamespacedName, &org); err != nil {
		if apierrors.IsNotFound(err) {
			available.DeletePartialMatch(map[string]string{"org": req.Name})
			r.forget(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get FlyOrg: %w", err)
	}
	regions, size := org.PoolRegions(), org.PoolSize()
	if !org.DeletionTimestamp.IsZero() {
		// Drain: the FlyOrg's finalizer waits for its FlyPeers.
		regions, size = nil, 0
	}
	pools, drop, err := r.count(ctx, &org, regions, size)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.deleteAll(ctx, drop); err != nil {
		return ctrl.Result{}, err
	}
	if len(regions) == 0 {
		available.DeletePartialMatch(map[string]string{"org": org.Name})
		return ctrl.Result{}, r.writeStatus(ctx, &org, regions, size, pools, nil)
	}

	var requeue time.Duration
	var fillErr error
	if usable(&org) {
		if wait := r.waitFor(org.Name); wait > 0 {
			requeue = wait
		} else {
			fillErr = r.fill(ctx, &org, regions, size, pools)
			if fillErr != nil {
				if errors.Is(fillErr, errStopped) || ctx.Err() != nil {
					return ctrl.Result{}, fillErr
				}
				requeue = r.failed(ctx, &org, fillErr)
			} else {
				r.succeeded(org.Name)
			}
		}
	} else {
		// The FlyOrg controller requeues the FlyOrg when it becomes Ready.
		log.V(1).Info("FlyOrg not usable yet; pool waits")
	}

	// Rotation: old peers go once their replacements are in, so a pool is
	// never emptied by its own rotation.
	var rotate []*glaceonv1alpha1.FlyPeer
	for _, region := range regions {
		p := pools[region]
		if int32(len(p.fresh)+p.added) >= size && len(p.expired) > 0 {
			rotate = append(rotate, p.expired...)
			p.expired = nil
		}
	}
	if len(rotate) > 0 {
		if err := r.deleteAll(ctx, rotate); err != nil {
			return ctrl.Result{}, err
		}
		rotated.WithLabelValues(org.Name).Add(float64(len(rotate)))
		log.Info("rotated pooled peers older than the maximum age", "count", len(rotate), "maxAge", r.opts.MaxAge.String())
	}
	for _, region := range regions {
		available.WithLabelValues(org.Name, region).Set(float64(pools[region].available()))
	}
	if err := r.writeStatus(ctx, &org, regions, size, pools, fillErr); err != nil {
		return ctrl.Result{}, err
	}
	if next := r.nextExpiry(pools); next > 0 && (requeue == 0 || next < requeue) {
		requeue = next
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// count sorts org's pooled FlyPeers (from the cache) into regions, and
// returns those not wanted any more (region dropped, over the size).
// Claimed ones are pods' peers and not the pool's any more.
func (r *refiller) count(ctx context.Context, org *glaceonv1alpha1.FlyOrg, regions []string, size int32) (map[string]*regionPool, []*glaceonv1alpha1.FlyPeer, error) {
	var list glaceonv1alpha1.FlyPeerList
	if err := r.client.List(ctx, &list, client.MatchingFields{indexInPool: org.Name}); err != nil {
		return nil, nil, fmt.Errorf("list pooled FlyPeers: %w", err)
	}
	pools := map[string]*regionPool{}
	for _, region := range regions {
		pools[region] = &regionPool{}
	}
	now := r.opts.Clock.Now()
	var drop []*glaceonv1alpha1.FlyPeer
	for i := range list.Items {
		fp := &list.Items[i]
		if !peers.InPool(fp) || !fp.DeletionTimestamp.IsZero() || fp.Spec.Org != org.Name {
			continue
		}
		p, wanted := pools[fp.Spec.Region]
		switch {
		case fp.Status.Phase != glaceonv1alpha1.FlyPeerAvailable:
			// Being added, here or by a previous leader; a refill that
			// died leaves one past the Fly timeout, which the sweeper
			// deletes after its grace.
			if wanted && now.Sub(fp.CreationTimestamp.Time) < r.opts.FlyTimeout+time.Minute {
				p.inFlight++
			}
		case !wanted:
			drop = append(drop, fp)
		case now.Sub(fp.CreationTimestamp.Time) >= r.opts.MaxAge:
			p.expired = append(p.expired, fp)
		default:
			p.fresh = append(p.fresh, fp)
		}
	}
	for _, p := range pools {
		// Over the size (it was lowered): the oldest go first.
		all := append(p.fresh, p.expired...)
		if extra := len(all) - int(size); extra > 0 {
			sort.Slice(all, func(i, j int) bool { return all[i].CreationTimestamp.Before(&all[j].CreationTimestamp) })
			drop = append(drop, all[:extra]...)
			keep := all[extra:]
			p.fresh, p.expired = nil, nil
			for _, fp := range keep {
				if now.Sub(fp.CreationTimestamp.Time) >= r.opts.MaxAge {
					p.expired = append(p.expired, fp)
				} else {
					p.fresh = append(p.fresh, fp)
				}
			}
		}
	}
	return pools, drop, nil
}

// usable reports whether org can be given peers: checked at least once,
// and not refused (an unanswered check is tried: the call will tell).
func usable(org *glaceonv1alpha1.FlyOrg) bool {
	ready := meta.FindStatusCondition(org.Status.Conditions, glaceonv1alpha1.ConditionReady)
	return org.Status.OrganizationID != "" && ready != nil &&
		(ready.Status == metav1.ConditionTrue || ready.Reason == flyorg.ReasonFlyUnavailable)
}

// fill adds the missing peers of every region with up to Options.Workers
// additions at once, each waiting for the FlyOrg's rate limiter. It stops
// at the first failure and returns it.
func (r *refiller) fill(ctx context.Context, org *glaceonv1alpha1.FlyOrg, regions []string, size int32, pools map[string]*regionPool) error {
	var jobs []string
	for _, region := range regions {
		p := pools[region]
		for range int(size) - len(p.fresh) - p.inFlight {
			jobs = append(jobs, region)
		}
	}
	if len(jobs) == 0 {
		return nil
	}
	fly, err := r.opts.Orgs.Client(ctx, org)
	if err != nil {
		refillErrors.WithLabelValues(org.Name, "token").Inc()
		return err
	}
	limiter := r.limiter(org.Name)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
		next  = make(chan string)
	)
	for range min(r.opts.Workers, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for region := range next {
				err := limiter.Wait(ctx)
				if err == nil {
					err = r.addOne(ctx, org, fly, region)
				}
				mu.Lock()
				if err == nil {
					pools[region].added++
				} else if first == nil {
					first = err
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, region := range jobs {
		select {
		case next <- region:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	n := 0
	for _, p := range pools {
		n += p.added
	}
	if n > 0 {
		refilled.WithLabelValues(org.Name).Add(float64(n))
		logf.FromContext(ctx).V(1).Info("added pooled peers", "count", n)
	}
	return first
}

// addOne adds one pooled peer, write-ahead: FlyPeer (Provisioning) →
// addWireGuardPeer → key Secret → phase Available. What a failure leaves
// is deleted (the FlyPeer's finalizer removes the Fly peer and the
// Secret), or, if the process dies, swept.
func (r *refiller) addOne(ctx context.Context, org *glaceonv1alpha1.FlyOrg, fly flyorg.FlyAPI, region string) error {
	keys, err := wgquick.GenerateKeyPair()
	if err != nil {
		return fmt.Errorf("generate WireGuard key pair: %w", err)
	}
	name := r.opts.Namer.NewPooled(org.Name, region)
	fp := peers.NewPooledFlyPeer(name, org.Name, region, keys.Public)
	if err := r.client.Create(ctx, fp); err != nil {
		refillErrors.WithLabelValues(org.Name, "kubernetes").Inc()
		return fmt.Errorf("record pooled FlyPeer %s: %w", name, err)
	}
	if err := r.step(StepAfterFlyPeer, name); err != nil {
		return err
	}
	flyCtx, cancel := context.WithTimeout(ctx, r.opts.FlyTimeout)
	created, err := fly.AddPeer(flyCtx, flyapi.AddPeerInput{
		Org:  flyapi.Organization{ID: org.Status.OrganizationID, Slug: org.SlugOrName()},
		Name: name, PublicKey: keys.Public, Region: region,
	})
	cancel()
	if err != nil {
		kind := "fly"
		if flyapi.IsRateLimited(err) {
			kind = "rate_limited"
		}
		refillErrors.WithLabelValues(org.Name, kind).Inc()
		r.discard(ctx, fp)
		return fmt.Errorf("addWireGuardPeer for pooled peer %s: %w", name, err)
	}
	if err := r.step(StepAfterFly, name); err != nil {
		return err
	}
	cfg, err := flyapi.NewWireGuardConfig(keys.Private, *created, r.opts.GatewayPort)
	if err == nil {
		err = r.client.Create(ctx, peers.NewPoolKeySecret(fp, r.opts.Orgs.Namespace(), cfg.Render()))
	}
	if err == nil {
		if err = r.step(StepAfterSecret, name); err != nil {
			return err
		}
		orig := fp.DeepCopy()
		fp.Status = glaceonv1alpha1.FlyPeerStatus{Phase: glaceonv1alpha1.FlyPeerAvailable, PeerIP: created.PeerIP.String(), OrganizationID: org.Status.OrganizationID}
		err = r.client.Status().Patch(ctx, fp, client.MergeFrom(orig))
	}
	if err != nil {
		refillErrors.WithLabelValues(org.Name, "kubernetes").Inc()
		r.discard(ctx, fp)
		return fmt.Errorf("store pooled peer %s: %w", name, err)
	}
	return nil
}

func (r *refiller) step(name, flypeer string) error {
	if r.opts.TestHook == nil {
		return nil
	}
	if err := r.opts.TestHook(name, flypeer); err != nil {
		return fmt.Errorf("%w (%s): %v", errStopped, name, err)
	}
	return nil
}

// discard deletes a half-made pooled FlyPeer, also when ctx ended (a
// cancelled refill); a failure leaves it Provisioning, for the sweeper.
func (r *refiller) discard(ctx context.Context, fp *glaceonv1alpha1.FlyPeer) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.client.Delete(ctx, &glaceonv1alpha1.FlyPeer{ObjectMeta: metav1.ObjectMeta{Name: fp.Name}}); err != nil && !apierrors.IsNotFound(err) {
		logf.FromContext(ctx).Error(err, "could not delete half-made pooled FlyPeer; the sweeper will", "flypeer", fp.Name)
	}
}

// deleteAll deletes pooled FlyPeers that have not changed since they were
// counted: the resourceVersion precondition lets a peer claimed in the
// meantime live (it is a pod's now).
func (r *refiller) deleteAll(ctx context.Context, fps []*glaceonv1alpha1.FlyPeer) error {
	var errs []error
	for _, fp := range fps {
		uid, rv := fp.UID, fp.ResourceVersion
		err := r.client.Delete(ctx, &glaceonv1alpha1.FlyPeer{ObjectMeta: metav1.ObjectMeta{Name: fp.Name}}, client.Preconditions{UID: &uid, ResourceVersion: &rv})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("delete pooled FlyPeer %s: %w", fp.Name, err))
		}
	}
	return errors.Join(errs...)
}

// nextExpiry is the time until the first fresh peer is due for rotation
// (0 if none).
func (r *refiller) nextExpiry(pools map[string]*regionPool) time.Duration {
	var next time.Duration
	now := r.opts.Clock.Now()
	for _, p := range pools {
		for _, fp := range p.fresh {
			d := fp.CreationTimestamp.Add(r.opts.MaxAge).Sub(now) + time.Second
			if next == 0 || d < next {
				next = d
			}
		}
	}
	return next
}

func (r *refiller) limiter(org string) *rate.Limiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.limiters[org]
	if !ok {
		l = rate.NewLimiter(rate.Limit(r.opts.Rate), r.opts.Burst)
		r.limiters[org] = l
	}
	return l
}

// waitFor is how long org's refill still backs off.
func (r *refiller) waitFor(org string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Until(r.notBefore[org])
}

// failed counts a failed refill and returns the backoff: doubling from
// RetryBaseDelay up to RetryMaxDelay, and at least the Retry-After of a
// 429. The first failure of a run is an Event on the FlyOrg.
func (r *refiller) failed(ctx context.Context, org *glaceonv1alpha1.FlyOrg, err error) time.Duration {
	r.mu.Lock()
	n := r.failures[org.Name]
	r.failures[org.Name] = n + 1
	delay := peers.BackoffDelay(n, r.opts.RetryBaseDelay, r.opts.RetryMaxDelay)
	var fe *flyapi.Error
	if errors.As(err, &fe) && fe.RetryAfter > delay {
		delay = fe.RetryAfter
	}
	r.notBefore[org.Name] = time.Now().Add(delay)
	r.mu.Unlock()
	if n == 0 {
		r.recorder.Eventf(org, nil, corev1.EventTypeWarning, ReasonRefillFailed, eventActionRefill,
			"could not add a pooled peer: %v; retrying with backoff (next in %s)", err, delay.Round(time.Millisecond))
	}
	logf.FromContext(ctx).Error(err, "pool refill failed; backing off", "failures", n+1, "retryAfter", delay.String())
	return delay
}

func (r *refiller) succeeded(org string) {
	r.mu.Lock()
	delete(r.failures, org)
	delete(r.notBefore, org)
	r.mu.Unlock()
}

func (r *refiller) forget(org string) {
	r.mu.Lock()
	delete(r.limiters, org)
	r.mu.Unlock()
	r.succeeded(org)
}

// writeStatus writes status.pool and the PoolReady condition (both
// removed when the pool is off), with the resourceVersion it read so that
// it never overwrites the FlyOrg controller's Ready.
func (r *refiller) writeStatus(ctx context.Context, org *glaceonv1alpha1.FlyOrg, regions []string, size int32, pools map[string]*regionPool, fillErr error) error {
	orig := org.DeepCopy()
	if len(regions) == 0 {
		org.Status.Pool = nil
		meta.RemoveStatusCondition(&org.Status.Conditions, glaceonv1alpha1.ConditionPoolReady)
	} else {
		st := &glaceonv1alpha1.FlyOrgPoolStatus{}
		var empty, short []string
		for _, region := range regions {
			n := pools[region].available()
			st.Regions = append(st.Regions, glaceonv1alpha1.FlyOrgPoolRegionStatus{Region: region, Target: size, Available: n})
			st.Target += size
			st.Available += n
			switch {
			case n == 0:
				empty = append(empty, regionName(region))
			case n < size:
				short = append(short, regionName(region))
			}
		}
		cond := metav1.Condition{Type: glaceonv1alpha1.ConditionPoolReady, ObservedGeneration: org.Generation}
		switch {
		case len(empty) > 0:
			cond.Status, cond.Reason = metav1.ConditionFalse, ReasonDepleted
			cond.Message = fmt.Sprintf("no Available pooled peer in region %s: pods there get their peer from a Fly call (denied while the Fly API is down)", strings.Join(empty, ", "))
		case len(short) > 0:
			cond.Status, cond.Reason = metav1.ConditionTrue, ReasonRefilling
			cond.Message = fmt.Sprintf("%d of %d pooled peers Available; refilling region %s", st.Available, st.Target, strings.Join(short, ", "))
		default:
			cond.Status, cond.Reason = metav1.ConditionTrue, ReasonFull
			cond.Message = fmt.Sprintf("%d pooled peers Available", st.Available)
		}
		switch {
		case fillErr != nil:
			cond.Message += fmt.Sprintf("; the last refill failed: %v", fillErr)
		case !usable(org):
			cond.Message += "; waiting for the FlyOrg to be Ready"
		}
		org.Status.Pool = st
		meta.SetStatusCondition(&org.Status.Conditions, cond)
	}
	if apiequality.Semantic.DeepEqual(orig.Status, org.Status) {
		return nil
	}
	if err := r.client.Status().Patch(ctx, org, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("update FlyOrg pool status: %w", err)
	}
	return nil
}

package pool_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/hack/localpod"
	"github.com/glaceon/glaceon/hack/testkit"
	glaceonadmission "github.com/glaceon/glaceon/webhook/admission"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/manager"
	"github.com/glaceon/glaceon/webhook/manager/managertest"
	"github.com/glaceon/glaceon/webhook/peers"
	"github.com/glaceon/glaceon/webhook/pool"
)

func TestMain(m *testing.M) { os.Exit(testkit.Run(m)) }

const org = managertest.DefaultFlyOrg

// pair is one control plane and Fly double with two manager replicas
// (leader election on, as deployed) behind a round-robin TCP balancer
// that the API server calls the webhook through.
type pair struct {
	a, b   *managertest.Env
	c      client.Client
	fly    *flyapitest.Server
	served [2]atomic.Int64 // admissions per replica

	// hold, while locked, stops every refill before its Fly call.
	hold sync.RWMutex
	// stopRefills is how many refills still end after their Fly call, as
	// if the manager died there.
	stopRefills atomic.Int64
	// stopClaimOf names the pod whose admission ends right after its
	// claim, as if the manager died there.
	stopClaimOf atomic.Value
	clock       *offsetClock
}

// offsetClock is the real clock moved forward by offset.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time                  { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

func startPair(t *testing.T) *pair {
	p := &pair{clock: &offsetClock{}}
	p.stopClaimOf.Store("")
	configure := func(replica int) func(*manager.Config) {
		return func(cfg *manager.Config) {
			cfg.LeaderElect = true
			cfg.SweepGrace, cfg.SweepInterval, cfg.AllowShortGrace = 3*time.Second, 500*time.Millisecond, true
			cfg.PoolOptions = func(o *pool.Options) {
				o.Rate, o.Burst, o.Workers = 500, 100, 8
				o.RetryBaseDelay, o.RetryMaxDelay = 100*time.Millisecond, time.Second
				o.Clock = p.clock
				o.TestHook = p.refillHook
			}
			cfg.AdmissionTestHook = p.admissionHook
			cfg.AdmissionMiddleware = func(next admission.Handler) admission.Handler {
				return admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
					p.served[replica].Add(1)
					return next.Handle(ctx, req)
				})
			}
		}
	}
	p.a = managertest.StartWith(t, managertest.Options{AsServiceAccount: true, Configure: configure(0)})
	p.b = managertest.StartWith(t, managertest.Options{AsServiceAccount: true, ControlPlane: p.a.ControlPlane, Fly: p.a.Fly, NoFlyOrg: true, Configure: configure(1)})
	p.c, p.fly = p.a.Client, p.a.Fly
	p.balance(t)
	return p
}

func (p *pair) refillHook(step, _ string) error {
	switch step {
	case pool.StepAfterFlyPeer:
		p.hold.RLock()
		p.hold.RUnlock() //nolint:staticcheck // a gate, not a critical section
	case pool.StepAfterFly:
		if p.stopRefills.Add(-1) >= 0 {
			return errors.New("manager killed mid-refill")
		}
	}
	return nil
}

func (p *pair) admissionHook(step, pod string) error {
	if step == glaceonadmission.StepAfterClaim && pod == p.stopClaimOf.Load().(string) {
		return errors.New("manager killed mid-claim")
	}
	return nil
}

// balance points the webhook at an HTTPS balancer that sends each
// request to the next replica (the API server reuses its connections, so
// balancing connections would not split a burst). It serves the
// replicas' own certificate, from their Secret.
func (p *pair) balance(t *testing.T) {
	ctx := context.Background()
	var s corev1.Secret
	if err := p.c.Get(ctx, client.ObjectKey{Namespace: managertest.Namespace, Name: p.a.Config.CertSecret}, &s); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(s.Data["tls.crt"], s.Data["tls.key"])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(s.Data["ca.crt"])
	var backends []http.Handler
	for _, port := range []int{p.a.Config.WebhookPort, p.b.Config.WebhookPort} {
		rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "https", Host: fmt.Sprintf("127.0.0.1:%d", port)})
		rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
		backends = append(backends, rp)
	}
	var next atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backends[next.Add(1)%int64(len(backends))].ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	mwc, err := managertest.WebhookConfiguration(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var cur admissionv1.MutatingWebhookConfiguration
	if err := p.c.Get(ctx, client.ObjectKeyFromObject(mwc), &cur); err != nil {
		t.Fatal(err)
	}
	for i := range cur.Webhooks {
		cur.Webhooks[i].ClientConfig.URL = mwc.Webhooks[i].ClientConfig.URL
	}
	if err := p.c.Update(ctx, &cur); err != nil {
		t.Fatal(err)
	}
}

func (p *pair) setPool(t *testing.T, size int32, regions ...string) {
	t.Helper()
	var fo glaceonv1alpha1.FlyOrg
	if err := p.c.Get(context.Background(), client.ObjectKey{Name: org}, &fo); err != nil {
		t.Fatal(err)
	}
	orig := fo.DeepCopy()
	fo.Spec.Pool = &glaceonv1alpha1.FlyOrgPool{Size: size, Regions: regions}
	if err := p.c.Patch(context.Background(), &fo, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
}

func (p *pair) flyOrg(t *testing.T) *glaceonv1alpha1.FlyOrg {
	t.Helper()
	var fo glaceonv1alpha1.FlyOrg
	if err := p.c.Get(context.Background(), client.ObjectKey{Name: org}, &fo); err != nil {
		t.Fatal(err)
	}
	return &fo
}

// inPool is the FlyPeers waiting in the pool, by phase.
func (p *pair) inPool(t *testing.T) (available, other []glaceonv1alpha1.FlyPeer) {
	for _, fp := range p.a.FlyPeers(t) {
		if !peers.InPool(&fp) {
			continue
		}
		if fp.Status.Phase == glaceonv1alpha1.FlyPeerAvailable && fp.DeletionTimestamp.IsZero() {
			available = append(available, fp)
		} else {
			other = append(other, fp)
		}
	}
	return available, other
}

// waitPool waits for exactly n Available pooled peers, nothing else in
// the pool, and the FlyOrg's status saying so.
func (p *pair) waitPool(t *testing.T, n int) {
	t.Helper()
	managertest.WaitFor(t, fmt.Sprintf("a full pool of %d", n), func() bool {
		avail, other := p.inPool(t)
		st := p.flyOrg(t).Status.Pool
		return len(avail) == n && len(other) == 0 && st != nil && st.Available == int32(n) && st.Target == int32(n)
	})
}

// consistent is the no-leak invariant: every Fly peer has a FlyPeer, and
// every pooled key Secret belongs to a pooled FlyPeer not yet bound.
func (p *pair) consistent(t *testing.T) error {
	names := map[string]*glaceonv1alpha1.FlyPeer{}
	fps := p.a.FlyPeers(t)
	for i := range fps {
		names[fps[i].Name] = &fps[i]
	}
	for _, fly := range p.fly.Peers("personal") {
		if names[fly.Name] == nil {
			return fmt.Errorf("Fly peer %s has no FlyPeer", fly.Name)
		}
	}
	var secrets corev1.SecretList
	if err := p.c.List(context.Background(), &secrets, client.InNamespace(managertest.Namespace), client.HasLabels{glaceonv1alpha1.LabelPool}); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		if fp := names[s.Name]; fp == nil || !peers.IsPooled(fp) || fp.Spec.Pod.UID != "" {
			return fmt.Errorf("pooled key Secret %s outlives its pool FlyPeer", s.Name)
		}
	}
	for _, fp := range fps {
		if fp.Spec.Pod.Namespace != "" && fp.Spec.Pod.UID == "" || !fp.DeletionTimestamp.IsZero() || fp.Status.Phase == glaceonv1alpha1.FlyPeerProvisioning {
			return fmt.Errorf("FlyPeer %s is not settled (namespace %q, pod UID %q, phase %q)", fp.Name, fp.Spec.Pod.Namespace, fp.Spec.Pod.UID, fp.Status.Phase)
		}
	}
	return nil
}

func (p *pair) waitConsistent(t *testing.T) {
	t.Helper()
	var last error
	defer func() {
		if t.Failed() && last != nil {
			t.Logf("last inconsistency: %v", last)
		}
	}()
	managertest.WaitFor(t, "no leaked Fly peer, FlyPeer or Secret", func() bool {
		last = p.consistent(t)
		return last == nil
	})
}

func pod(ns, name string) *corev1.Pod {
	return managertest.Pod(ns, name, map[string]string{inject.AnnotationTarget: "twi-ollama.flycast:80"})
}

func TestPool(t *testing.T) {
	p := startPair(t)
	ctx := context.Background()

	t.Run("spec.pool is validated with the field and the fix", func(t *testing.T) {
		for _, tt := range []struct {
			pool glaceonv1alpha1.FlyOrgPool
			want string
		}{
			{glaceonv1alpha1.FlyOrgPool{Size: 2, Regions: []string{"YYZ"}}, "spec.pool.regions must be Fly region codes"},
			{glaceonv1alpha1.FlyOrgPool{Size: 501}, "spec.pool.size"},
			{glaceonv1alpha1.FlyOrgPool{Size: -1}, "spec.pool.size"},
			{glaceonv1alpha1.FlyOrgPool{Size: 100, Regions: []string{"yyz", "iad", "ord", "lhr", "ams", "fra"}}, "at most 500 pooled peers"},
		} {
			fo := &glaceonv1alpha1.FlyOrg{
				ObjectMeta: metav1.ObjectMeta{Name: "invalid-pool"},
				Spec: glaceonv1alpha1.FlyOrgSpec{
					TokenSecretRef: glaceonv1alpha1.SecretKeyRef{Name: managertest.TokenSecret},
					Namespaces:     []string{"*"},
					Pool:           &tt.pool,
				},
			}
			err := p.c.Create(ctx, fo)
			if err == nil {
				p.c.Delete(ctx, fo)
				t.Errorf("pool %+v accepted", tt.pool)
			} else if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("pool %+v: error %q does not mention %q", tt.pool, err, tt.want)
			}
		}
	})

	t.Run("50 pods at once on two replicas from a pool of 60: 50 distinct peers, no Fly call", func(t *testing.T) {
		p.setPool(t, 60)
		p.waitPool(t, 60)
		ns := p.a.Namespace(t, "burst")
		p.hold.Lock() // the refill may not call Fly while the pods are admitted
		p.fly.ResetRequestCounts()
		served := [2]int64{p.served[0].Load(), p.served[1].Load()}
		errs := make(chan error, 50)
		for i := range 50 {
			go func() { errs <- p.c.Create(ctx, pod(ns, fmt.Sprintf("p-%d", i))) }()
		}
		for range 50 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		adds := p.fly.OpRequests("addWireGuardPeer")
		p.hold.Unlock()
		if adds != 0 {
			t.Errorf("%d addWireGuardPeer requests while the pods were admitted, want 0", adds)
		}
		if a, b := p.served[0].Load()-served[0], p.served[1].Load()-served[1]; a == 0 || b == 0 {
			t.Errorf("admissions per replica: %d and %d; want both replicas serving", a, b)
		}
		var pods corev1.PodList
		if err := p.c.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		for _, pd := range pods.Items {
			name := pd.Annotations[inject.AnnotationPeer]
			if other, dup := seen[name]; dup {
				t.Errorf("peer %s handed to %s and %s", name, other, pd.Name)
			}
			seen[name] = pd.Name
		}
		if len(pods.Items) != 50 || len(seen) != 50 {
			t.Fatalf("%d pods with %d distinct peers, want 50 and 50", len(pods.Items), len(seen))
		}
		var unbound []string
		defer func() {
			if t.Failed() {
				t.Logf("not bound: %v", unbound)
			}
		}()
		managertest.WaitFor(t, "every FlyPeer bound to its one pod", func() bool {
			unbound = nil
			found := 0
			for _, fp := range p.a.FlyPeers(t) {
				pd, ok := seen[fp.Name]
				if !ok {
					continue
				}
				found++
				if !(peers.IsPooled(&fp) && fp.Spec.Pod.Namespace == ns && fp.Spec.Pod.Name == pd && fp.Status.Phase == glaceonv1alpha1.FlyPeerBound) {
					unbound = append(unbound, fmt.Sprintf("%s(pod %q, phase %s)", fp.Name, fp.Spec.Pod.Name, fp.Status.Phase))
				}
			}
			if found != len(seen) {
				unbound = append(unbound, fmt.Sprintf("%d of the pods' FlyPeers are gone", len(seen)-found))
			}
			return len(unbound) == 0
		})
		p.waitPool(t, 60)
		p.waitConsistent(t)
	})

	t.Run("Fly down: a pool of 5 admits 5 pods whose tunnels work, denies the 6th, refills when Fly is back", func(t *testing.T) {
		p.setPool(t, 5)
		p.waitPool(t, 5)
		ns := p.a.Namespace(t, "outage")
		p.fly.Faults().Set(flyapitest.Fault{Kind: flyapitest.Fault503})
		defer p.fly.Faults().Clear()
		for i := range 5 {
			if err := p.c.Create(ctx, pod(ns, fmt.Sprintf("p-%d", i))); err != nil {
				t.Fatalf("pod %d during the outage: %v", i, err)
			}
		}
		err := p.c.Create(ctx, pod(ns, "sixth"))
		if err == nil || !strings.Contains(err.Error(), "Fly API") || !strings.Contains(err.Error(), "retrying is safe") {
			t.Errorf("6th pod during the outage: %v; want the Fly outage denial", err)
		}
		managertest.WaitFor(t, "PoolReady=False Depleted", func() bool {
			c := meta.FindStatusCondition(p.flyOrg(t).Status.Conditions, glaceonv1alpha1.ConditionPoolReady)
			return c != nil && c.Status == metav1.ConditionFalse && c.Reason == pool.ReasonDepleted
		})

		// The tunnel of a pooled pod, with the sidecar run from its spec
		// and its Secret, while Fly's API is still down.
		var pd corev1.Pod
		if err := p.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "p-0"}, &pd); err != nil {
			t.Fatal(err)
		}
		var secret corev1.Secret
		if err := p.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: pd.Annotations[inject.AnnotationPeer]}, &secret); err != nil {
			t.Fatal(err)
		}
		proc := localpod.StartForTest(t, testkit.SidecarBinary(t), &pd, &secret)
		if got := proc.GetForTest(t, "127.0.0.2:80", "/"); got != "ok twi-ollama" {
			t.Errorf("answer through the tunnel = %q, want %q", got, "ok twi-ollama")
		}

		p.fly.Faults().Clear()
		p.waitPool(t, 5)
		p.waitConsistent(t)
	})

	t.Run("a dry run claims nothing", func(t *testing.T) {
		ns := p.a.Namespace(t, "dryrun")
		before, _ := p.inPool(t)
		if err := p.c.Create(ctx, pod(ns, "dry"), client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		after, _ := p.inPool(t)
		if len(after) != len(before) {
			t.Errorf("%d pooled peers Available after a dry run, %d before", len(after), len(before))
		}
		for _, fp := range p.a.FlyPeers(t) {
			if fp.Spec.Pod.Namespace == ns {
				t.Errorf("FlyPeer %s claimed by a dry run", fp.Name)
			}
		}
	})

	t.Run("a claimed peer whose pod is rejected later is removed after the grace", func(t *testing.T) {
		ns := p.a.Namespace(t, "rejected")
		bad := pod(ns, "rejected")
		bad.Spec.Containers[0].Image = "" // passes the webhook, fails validation
		if err := p.c.Create(ctx, bad); err == nil {
			t.Fatal("invalid pod was created")
		}
		claimed := 0
		for _, fp := range p.a.FlyPeers(t) {
			if fp.Spec.Pod.Namespace == ns && peers.IsPooled(&fp) {
				claimed++
			}
		}
		if claimed != 1 {
			t.Errorf("%d pooled FlyPeers claimed for namespace %s right after the rejection, want 1", claimed, ns)
		}
		managertest.WaitFor(t, "the claim swept with its Secret", func() bool {
			var secrets corev1.SecretList
			if err := p.c.List(ctx, &secrets, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
			for _, fp := range p.a.FlyPeers(t) {
				if fp.Spec.Pod.Namespace == ns {
					return false
				}
			}
			return len(secrets.Items) == 0
		})
		p.waitPool(t, 5)
		p.waitConsistent(t)
	})

	t.Run("killed mid-claim: the claim is swept, never claimed twice", func(t *testing.T) {
		ns := p.a.Namespace(t, "midclaim")
		p.stopClaimOf.Store("crash")
		err := p.c.Create(ctx, pod(ns, "crash"))
		p.stopClaimOf.Store("")
		if err == nil {
			t.Fatal("pod created although its admission died")
		}
		var claimed *glaceonv1alpha1.FlyPeer
		for _, fp := range p.a.FlyPeers(t) {
			if fp.Spec.Pod.Namespace == ns {
				claimed = fp.DeepCopy()
			}
		}
		if claimed == nil {
			t.Fatal("no FlyPeer claimed for the pod whose admission died")
		}
		// Even a cluster admin cannot put it back into the pool.
		orig := claimed.DeepCopy()
		claimed.Spec.Pod.Namespace = ""
		err = p.c.Patch(ctx, claimed, client.MergeFrom(orig))
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "cannot change once set") {
			t.Errorf("returning a claimed peer to the pool: %v; want Invalid", err)
		}
		// The next pod gets another peer.
		if err := p.c.Create(ctx, pod(ns, "next")); err != nil {
			t.Fatal(err)
		}
		var next corev1.Pod
		if err := p.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "next"}, &next); err != nil {
			t.Fatal(err)
		}
		if next.Annotations[inject.AnnotationPeer] == orig.Name {
			t.Errorf("the dead admission's peer %s was claimed again", orig.Name)
		}
		managertest.WaitFor(t, "the dead claim swept", func() bool {
			err := p.c.Get(ctx, client.ObjectKey{Name: orig.Name}, &glaceonv1alpha1.FlyPeer{})
			return apierrors.IsNotFound(err)
		})
		p.waitPool(t, 5)
		p.waitConsistent(t)
	})

	t.Run("killed mid-refill: the half-made peers are swept, the pool refills", func(t *testing.T) {
		ns := p.a.Namespace(t, "midrefill")
		p.stopRefills.Store(3)
		for i := range 3 {
			if err := p.c.Create(ctx, pod(ns, fmt.Sprintf("p-%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		managertest.WaitFor(t, "three refills killed after their Fly call", func() bool { return p.stopRefills.Load() <= 0 })
		p.waitPool(t, 5)
		p.waitConsistent(t)
	})

	t.Run("rotation replaces old pooled peers and leaves claimed ones alone", func(t *testing.T) {
		p.waitPool(t, 5)
		old, _ := p.inPool(t)
		claimed := map[string]metav1.Time{}
		for _, fp := range p.a.FlyPeers(t) {
			if fp.Spec.Pod.UID != "" {
				claimed[fp.Name] = fp.CreationTimestamp
			}
		}
		p.clock.offset.Store(int64(pool.DefaultMaxAge + time.Hour))
		defer p.clock.offset.Store(0)
		// Any change of the FlyOrg makes the refill look again.
		fo := p.flyOrg(t)
		orig := fo.DeepCopy()
		metav1.SetMetaDataAnnotation(&fo.ObjectMeta, "test/rotate", "now")
		if err := p.c.Patch(ctx, fo, client.MergeFrom(orig)); err != nil {
			t.Fatal(err)
		}
		managertest.WaitFor(t, "every old pooled peer replaced", func() bool {
			for _, fp := range old {
				if err := p.c.Get(ctx, client.ObjectKey{Name: fp.Name}, &glaceonv1alpha1.FlyPeer{}); !apierrors.IsNotFound(err) {
					return false
				}
			}
			return true
		})
		p.clock.offset.Store(0)
		p.waitPool(t, 5)
		for name := range claimed {
			var fp glaceonv1alpha1.FlyPeer
			if err := p.c.Get(ctx, client.ObjectKey{Name: name}, &fp); err != nil || fp.Spec.Pod.UID == "" {
				t.Errorf("claimed FlyPeer %s touched by the rotation: %v", name, err)
			}
		}
		p.waitConsistent(t)
	})

	t.Run("pool off: pooled peers removed; pods gone: nothing left", func(t *testing.T) {
		p.setPool(t, 0)
		managertest.WaitFor(t, "pool emptied and its status gone", func() bool {
			avail, other := p.inPool(t)
			fo := p.flyOrg(t)
			return len(avail)+len(other) == 0 && fo.Status.Pool == nil && meta.FindStatusCondition(fo.Status.Conditions, glaceonv1alpha1.ConditionPoolReady) == nil
		})
		for _, ns := range []string{"burst", "outage", "midclaim", "midrefill"} {
			if err := p.c.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0)); err != nil {
				t.Fatal(err)
			}
		}
		managertest.WaitFor(t, "no FlyPeer, Fly peer or pooled Secret left", func() bool {
			var secrets corev1.SecretList
			if err := p.c.List(ctx, &secrets, client.InNamespace(managertest.Namespace), client.HasLabels{glaceonv1alpha1.LabelPool}); err != nil {
				t.Fatal(err)
			}
			return len(p.a.FlyPeers(t)) == 0 && len(p.fly.Peers("personal")) == 0 && len(secrets.Items) == 0
		})
	})
}

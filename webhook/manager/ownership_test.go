package manager_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	glaceonadmission "github.com/glaceon/glaceon/webhook/admission"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/manager"
	"github.com/glaceon/glaceon/webhook/manager/managertest"
	"github.com/glaceon/glaceon/webhook/peers"
)

// fastSweeps: a short grace so the tests see sweeps (the floor is lifted
// for tests only).
func fastSweeps(cfg *manager.Config) {
	cfg.SweepGrace, cfg.SweepInterval, cfg.AllowShortGrace = 3*time.Second, 300*time.Millisecond, true
	cfg.FlyOrgRecheck = time.Hour
}

func pod(ns, name string, annotations map[string]string) *corev1.Pod {
	if annotations == nil {
		annotations = map[string]string{inject.AnnotationTarget: "twi-ollama"}
	}
	return managertest.Pod(ns, name, annotations)
}

// admit creates an annotated pod and waits for its FlyPeer to be bound.
func admit(t testing.TB, e *managertest.Env, c client.Client, p *corev1.Pod) (*corev1.Pod, string) {
	t.Helper()
	if err := c.Create(context.Background(), p); err != nil {
		t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	name := p.Annotations[inject.AnnotationPeer]
	managertest.WaitFor(t, "FlyPeer "+name+" bound", func() bool {
		var fp glaceonv1alpha1.FlyPeer
		return e.Client.Get(context.Background(), client.ObjectKey{Name: name}, &fp) == nil && fp.Spec.Pod.UID == p.UID && fp.Status.Phase == glaceonv1alpha1.FlyPeerBound
	})
	return p, name
}

func hasPeer(fly *flyapitest.Server, org, name string) bool {
	for _, p := range fly.Peers(org) {
		if p.Name == name {
			return true
		}
	}
	return false
}

// TestOwnership runs the manager as its own ServiceAccount with the shipped
// deploy/rbac, and a tenant holding the stock edit role in one namespace
// tries what a hostile tenant would (issue 10, defects 2, 3, 5, 6, 8).
func TestOwnership(t *testing.T) {
	t.Parallel() // each has its own control plane and Fly double
	fly := flyapitest.Start(t, flyapitest.Options{})
	e := managertest.StartWith(t, managertest.Options{AsServiceAccount: true, Fly: fly, Configure: fastSweeps})
	ctx := context.Background()
	victimNS := e.Namespace(t, "victim")
	tenantNS := e.Namespace(t, "tenant")
	tenant := e.TenantClient(t, "mallory", tenantNS)

	// Defect 8: everything below runs with the shipped RBAC; the basic
	// lifecycle works under it.
	victim, victimPeer := admit(t, e, e.Client, pod(victimNS, "victim", nil))
	own, ownPeer := admit(t, e, tenant, pod(tenantNS, "own", nil))
	managertest.WaitFor(t, "the FlyOrg counting its 2 FlyPeers", func() bool {
		var org glaceonv1alpha1.FlyOrg
		return e.Client.Get(ctx, client.ObjectKey{Name: managertest.DefaultFlyOrg}, &org) == nil && org.Status.Peers == 2
	})

	t.Run("the tenant cannot create or change FlyOrgs or FlyPeers, nor read the token", func(t *testing.T) {
		forbidden := func(what string, err error) {
			t.Helper()
			if !apierrors.IsForbidden(err) {
				t.Errorf("tenant %s: err = %v, want Forbidden", what, err)
			}
		}
		forbidden("creates a FlyOrg", tenant.Create(ctx, &glaceonv1alpha1.FlyOrg{ObjectMeta: metav1.ObjectMeta{Name: "evil"},
			Spec: glaceonv1alpha1.FlyOrgSpec{TokenSecretRef: glaceonv1alpha1.SecretKeyRef{Name: managertest.TokenSecret}, Namespaces: []string{"*"}}}))
		forbidden("creates a FlyPeer", tenant.Create(ctx, peers.NewFlyPeer("k8s-evil", managertest.DefaultFlyOrg, "", wgquick.Key{}, tenantNS)))
		var fp glaceonv1alpha1.FlyPeer
		forbidden("reads a FlyPeer", tenant.Get(ctx, client.ObjectKey{Name: victimPeer}, &fp))
		fp = glaceonv1alpha1.FlyPeer{ObjectMeta: metav1.ObjectMeta{Name: victimPeer}}
		forbidden("deletes a FlyPeer", tenant.Delete(ctx, &fp))
		forbidden("patches a FlyPeer", tenant.Patch(ctx, &fp, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"pod":{"namespace":"tenant"}}}`))))
		org := glaceonv1alpha1.FlyOrg{ObjectMeta: metav1.ObjectMeta{Name: managertest.DefaultFlyOrg}}
		forbidden("patches a FlyOrg", tenant.Patch(ctx, &org, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"namespaces":["*"]}}`))))
		var s corev1.Secret
		forbidden("reads the token", tenant.Get(ctx, client.ObjectKey{Namespace: managertest.Namespace, Name: managertest.TokenSecret}, &s))
	})

	t.Run("forged, relabelled and deleted Secrets change nothing at Fly", func(t *testing.T) {
		removesBefore := fly.OpRequests("removeWireGuardPeer")
		// The old attack: a Secret in the tenant's namespace that names the
		// victim's peer, with glaceon's labels and finalizer.
		forged := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Name: "forged", Namespace: tenantNS,
			Labels: map[string]string{inject.LabelManagedBy: inject.ManagedByValue, inject.LabelPeerName: victimPeer, inject.LabelPeerOrg: "personal"},
		}}
		if err := tenant.Create(ctx, forged); err != nil {
			t.Fatal(err)
		}
		if err := tenant.Delete(ctx, forged); err != nil {
			t.Fatal(err)
		}
		// The tenant's own pod's Secret: relabelled, then deleted.
		var mine corev1.Secret
		if err := tenant.Get(ctx, client.ObjectKey{Namespace: tenantNS, Name: ownPeer}, &mine); err != nil {
			t.Fatal(err)
		}
		mine.Labels[inject.LabelPeerName] = victimPeer
		if err := tenant.Update(ctx, &mine); err != nil {
			t.Fatal(err)
		}
		if err := tenant.Delete(ctx, &mine); err != nil {
			t.Fatal(err)
		}
		// Several sweeps past the grace period.
		time.Sleep(e.Config.SweepGrace + 5*e.Config.SweepInterval)
		if n := fly.OpRequests("removeWireGuardPeer") - removesBefore; n != 0 {
			t.Errorf("forged and deleted Secrets caused %d removeWireGuardPeer requests", n)
		}
		if !hasPeer(fly, "personal", victimPeer) || !hasPeer(fly, "personal", ownPeer) {
			t.Errorf("a Fly peer went away: victim %v, tenant's own %v", hasPeer(fly, "personal", victimPeer), hasPeer(fly, "personal", ownPeer))
		}
		for _, name := range []string{victimPeer, ownPeer} {
			var fp glaceonv1alpha1.FlyPeer
			if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, &fp); err != nil || !fp.DeletionTimestamp.IsZero() {
				t.Errorf("FlyPeer %s: %v (deleting: %v)", name, err, fp.DeletionTimestamp)
			}
		}
	})

	t.Run("a copied injected pod gets its own peer", func(t *testing.T) {
		var orig corev1.Pod
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(victim), &orig); err != nil {
			t.Fatal(err)
		}
		// What `kubectl debug --copy-to` and restore tools send: the
		// injected pod under a new name, annotations and volumes kept.
		cp := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "victim-copy", Namespace: victimNS, Annotations: orig.Annotations, Labels: orig.Labels}, Spec: orig.Spec}
		cp.Spec.NodeName = ""
		_, copyPeer := admit(t, e, e.Client, cp)
		if copyPeer == victimPeer || copyPeer == "" {
			t.Fatalf("copy names peer %q, the original's is %q", copyPeer, victimPeer)
		}
		var secretVolume string
		for _, v := range cp.Spec.Volumes {
			if v.Name == inject.PeerVolumeName {
				secretVolume = v.Secret.SecretName
			}
		}
		if secretVolume != copyPeer {
			t.Errorf("copy mounts Secret %q, want its own %q", secretVolume, copyPeer)
		}
		if !hasPeer(fly, "personal", copyPeer) || !hasPeer(fly, "personal", victimPeer) {
			t.Errorf("want both peers at Fly")
		}
		if err := e.Client.Delete(ctx, cp); err != nil {
			t.Fatal(err)
		}
		managertest.WaitFor(t, "the copy's peer removed, the original's kept", func() bool {
			return !hasPeer(fly, "personal", copyPeer) && hasPeer(fly, "personal", victimPeer)
		})
	})

	t.Run("rollback with a Secret quota of 0: denied, nothing left, no Secret informer", func(t *testing.T) {
		ns := e.Namespace(t, "quota")
		quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "no-secrets", Namespace: ns},
			Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourceSecrets: resource.MustParse("0")}}}
		if err := e.Client.Create(ctx, quota); err != nil {
			t.Fatal(err)
		}
		before := len(fly.Peers("personal"))
		// kube-controller-manager watches Secrets cluster-wide itself.
		watchesBefore := clusterWatches(t, e.ControlPlane.Config, "secrets")
		err := e.Client.Create(ctx, pod(ns, "denied", nil))
		if err == nil || !strings.Contains(err.Error(), "store the WireGuard config of peer") || !strings.Contains(err.Error(), "retrying is safe") {
			t.Fatalf("create = %v, want the Secret denial", err)
		}
		managertest.WaitFor(t, "the rolled-back peer and FlyPeer gone", func() bool {
			for _, fp := range e.FlyPeers(t) {
				if fp.Spec.Pod.Namespace == ns {
					return false
				}
			}
			return len(fly.Peers("personal")) == before
		})
		// The manager may not even list Secrets outside its namespace…
		var list corev1.SecretList
		mgrClient, err := client.New(e.ManagerRESTConfig, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := mgrClient.List(ctx, &list); !apierrors.IsForbidden(err) {
			t.Errorf("the manager's ServiceAccount lists every Secret: %v", err)
		}
		// …opened no cluster-wide Secret watch at the API server…
		if n := clusterWatches(t, e.ControlPlane.Config, "secrets"); n != watchesBefore {
			t.Errorf("cluster-wide Secret watches went from %d to %d", watchesBefore, n)
		}
		// …and its cache refuses to start one (ReaderFailOnMissingInformer).
		err = e.Manager.GetClient().Get(ctx, client.ObjectKey{Namespace: ns, Name: "any"}, &corev1.Secret{})
		var notCached *cache.ErrResourceNotCached
		if !errors.As(err, &notCached) {
			t.Errorf("a cached Secret read through the manager's client = %v, want ErrResourceNotCached", err)
		}
	})

	t.Run("token rotation through the Secret, and a wrong token, with no restart", func(t *testing.T) {
		ns := e.Namespace(t, "rotation")
		e.SetToken(t, "FlyV1 fm2_wrong_token")
		managertest.WaitFor(t, "Ready=False Unauthorized", func() bool {
			c := e.FlyOrgReady(t, managertest.DefaultFlyOrg)
			return c != nil && c.Status == metav1.ConditionFalse && c.Reason == "Unauthorized"
		})
		if c := e.FlyOrgReady(t, managertest.DefaultFlyOrg); !strings.Contains(c.Message, "rejected the token in secret glaceon-system/fly-api-token") || strings.Contains(c.Message, "fm2_wrong") {
			t.Errorf("Ready message = %q: want the Fly error naming the Secret, without the token", c.Message)
		}
		err := e.Client.Create(ctx, pod(ns, "while-wrong", nil))
		if err == nil || !strings.Contains(err.Error(), `FlyOrg "personal" is not ready (Unauthorized)`) {
			t.Errorf("create with a wrong token = %v, want a denial naming the FlyOrg", err)
		}
		// Rotate to another valid token.
		e.SetToken(t, fly.UserToken())
		e.WaitFlyOrgReady(t, managertest.DefaultFlyOrg)
		p, name := admit(t, e, e.Client, pod(ns, "after", nil))
		if !hasPeer(fly, "personal", name) {
			t.Errorf("no Fly peer after rotation")
		}
		if err := e.Client.Delete(ctx, p); err != nil {
			t.Fatal(err)
		}
		managertest.WaitFor(t, "peer removed", func() bool { return !hasPeer(fly, "personal", name) })
		e.SetToken(t, fly.Token())
		e.WaitFlyOrgReady(t, managertest.DefaultFlyOrg)
	})

	t.Run("pods gone: FlyPeers, Fly peers and Secrets gone", func(t *testing.T) {
		for _, p := range []*corev1.Pod{victim, own} {
			if err := e.Client.Delete(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		managertest.WaitFor(t, "nothing left", func() bool {
			return len(e.FlyPeers(t)) == 0 && len(fly.Peers("personal")) == 0
		})
		var list corev1.SecretList
		if err := e.Client.List(ctx, &list, client.MatchingLabels{inject.LabelManagedBy: inject.ManagedByValue}, client.InNamespace(victimNS)); err != nil || len(list.Items) != 0 {
			t.Errorf("peer Secrets left in %s: %d (%v)", victimNS, len(list.Items), err)
		}
	})
}

// clusterWatches reads kube-apiserver's open cluster-scoped WATCH requests
// on resource from its metrics.
func clusterWatches(t *testing.T, cfg *rest.Config, resourceName string) int {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_longrunning_requests{") || !strings.Contains(line, `resource="`+resourceName+`"`) ||
			!strings.Contains(line, `scope="cluster"`) || !strings.Contains(line, `verb="WATCH"`) {
			continue
		}
		var v float64
		fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
		n += int(v)
	}
	return n
}

// TestManagerKilledAtEachStep: an admission that ends at any step (the
// process dying there: no clean-up runs) leaves nothing once the grace
// period is over: no Fly peer, no FlyPeer, no Secret.
func TestManagerKilledAtEachStep(t *testing.T) {
	t.Parallel() // each has its own control plane and Fly double
	fly := flyapitest.Start(t, flyapitest.Options{})
	var crashAt struct {
		sync.Mutex
		step string
	}
	e := managertest.StartWith(t, managertest.Options{AsServiceAccount: true, Fly: fly, Configure: func(cfg *manager.Config) {
		fastSweeps(cfg)
		// The longest Fly deadline allowed: what is left of the webhook's
		// timeout must still hold the clean-up.
		cfg.FlyTimeout = manager.AdmissionTimeout - glaceonadmission.MinCleanupTime
		cfg.AdmissionTestHook = func(step, _ string) error {
			crashAt.Lock()
			defer crashAt.Unlock()
			if step == crashAt.step {
				return errors.New("killed")
			}
			return nil
		}
	}})
	ctx := context.Background()
	for i, step := range []string{glaceonadmission.StepBeforeFlyPeer, glaceonadmission.StepAfterFlyPeer, glaceonadmission.StepAfterFly, glaceonadmission.StepAfterSecret, glaceonadmission.StepBeforeResponse} {
		t.Run(step, func(t *testing.T) {
			ns := e.Namespace(t, fmt.Sprintf("killed-%d", i))
			crashAt.Lock()
			crashAt.step = step
			crashAt.Unlock()
			if err := e.Client.Create(ctx, pod(ns, "p", nil)); err == nil {
				t.Fatal("pod created although the admission died")
			}
			crashAt.Lock()
			crashAt.step = ""
			crashAt.Unlock()
			nothingLeft(t, e, fly, ns)
		})
	}

	// Issue 15 item 8: Fly answers after the admission's Fly deadline; the
	// denial with its reason, and the clean-up, still fit in the webhook's
	// timeoutSeconds (the API server would otherwise answer with its own
	// timeout and the explanation would be lost).
	t.Run("Fly slower than the deadline", func(t *testing.T) {
		ns := e.Namespace(t, "slow")
		fly.Faults().Set(flyapitest.Fault{Op: "addWireGuardPeer", Kind: flyapitest.FaultSlow, Delay: manager.WebhookTimeout})
		defer fly.Faults().Clear()
		err := e.Client.Create(ctx, pod(ns, "p", nil))
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("Fly API did not answer within %s", e.Config.FlyTimeout)) || !strings.Contains(err.Error(), "retrying is safe") {
			t.Fatalf("create = %v, want glaceon's own denial, not the API server's timeout", err)
		}
		fly.Faults().Clear()
		nothingLeft(t, e, fly, ns)
	})

	// The state is in the cluster, not in the manager's memory: a manager
	// that dies mid-admission and never comes back is cleaned up after by
	// the next one.
	t.Run("a new manager cleans up after a dead one", func(t *testing.T) {
		ns := e.Namespace(t, "restarted")
		crashAt.Lock()
		crashAt.step = glaceonadmission.StepAfterSecret
		crashAt.Unlock()
		if err := e.Client.Create(ctx, pod(ns, "p", nil)); err == nil {
			t.Fatal("pod created although the admission died")
		}
		e.Stop()
		if len(e.FlyPeers(t)) != 1 || len(fly.Peers("personal")) != 1 {
			t.Fatalf("want the dead admission's FlyPeer and Fly peer before the restart")
		}
		next := managertest.StartWith(t, managertest.Options{AsServiceAccount: true, Fly: fly, ControlPlane: e.ControlPlane, Configure: fastSweeps})
		nothingLeft(t, next, fly, ns)
	})
}

func nothingLeft(t *testing.T, e *managertest.Env, fly *flyapitest.Server, ns string) {
	t.Helper()
	managertest.WaitFor(t, "nothing left after the grace period", func() bool {
		var secrets corev1.SecretList
		if err := e.Client.List(context.Background(), &secrets, client.InNamespace(ns)); err != nil {
			return false
		}
		return len(e.FlyPeers(t)) == 0 && len(fly.Peers("personal")) == 0 && len(secrets.Items) == 0
	})
}

// TestFlyRequestsPerPod: a pod's whole life costs at most 3 Fly requests
// (one add, one remove, no listing), however many peers the org has
// (defect 7). Counted at the double, with the sweeper's interval long
// enough to stay out of the count.
func TestFlyRequestsPerPod(t *testing.T) {
	t.Parallel() // each has its own control plane and Fly double
	fly := flyapitest.Start(t, flyapitest.Options{})
	for i := range 2000 {
		keys, err := wgquick.GenerateKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fly.AddPeer("personal", fmt.Sprintf("someone-else-%d", i), keys.Public.String()); err != nil {
			t.Fatal(err)
		}
	}
	e := managertest.StartWith(t, managertest.Options{AsServiceAccount: true, Fly: fly, Configure: func(cfg *manager.Config) {
		cfg.SweepInterval, cfg.FlyOrgRecheck = time.Hour, time.Hour
	}})
	ctx := context.Background()
	ns := e.Namespace(t, "count")
	// Let the first sweep (which lists the org) finish.
	stable := fly.Requests()
	managertest.WaitFor(t, "the first sweep done", func() bool {
		time.Sleep(500 * time.Millisecond)
		n := fly.Requests()
		done := n == stable
		stable = n
		return done
	})
	before := fly.Requests()
	p, name := admit(t, e, e.Client, pod(ns, "counted", nil))
	if err := e.Client.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	managertest.WaitFor(t, "peer removed", func() bool { return !hasPeer(fly, "personal", name) && len(e.FlyPeers(t)) == 0 })
	if n := fly.Requests() - before; n > 3 {
		t.Errorf("one pod's life took %d Fly requests (%v since the start), want at most 3", n, fly.RequestCounts())
	}
	if len(fly.Peers("personal")) != 2000 {
		t.Errorf("the org's other peers changed: %d", len(fly.Peers("personal")))
	}
}

// TestTwoClustersShareAnOrg: two clusters with the same peer prefix in one
// org, plus a peer a person made with `glaceon peer create --name
// k8s-laptop-1`. After many sweeps with a short grace, each cluster's
// orphans are gone and every other peer is still there (defects 1 and 4:
// the second FlyOrg's org is swept too).
func TestTwoClustersShareAnOrg(t *testing.T) {
	t.Parallel() // each has its own control plane and Fly double
	fly := flyapitest.Start(t, flyapitest.Options{})
	a := managertest.StartWith(t, managertest.Options{AsServiceAccount: true, Fly: fly, Configure: fastSweeps})
	b := managertest.StartWith(t, managertest.Options{AsServiceAccount: true, Fly: fly, Configure: fastSweeps})
	ctx := context.Background()

	laptop := filepath.Join(t.TempDir(), "laptop.conf")
	cli := exec.Command("go", "run", "github.com/glaceon/glaceon/cmd/glaceon", "peer", "create", "--org", "personal", "--name", "k8s-laptop-1", "--out", laptop)
	cli.Env = append(os.Environ(), "FLY_API_BASE_URL="+fly.URL(), "FLY_API_TOKEN="+fly.Token(), "FLY_ACCESS_TOKEN=")
	if out, err := cli.CombinedOutput(); err != nil {
		t.Fatalf("glaceon peer create: %v\n%s", err, out)
	}

	// Cluster A also uses org acme, through a second FlyOrg.
	a.CreateFlyOrg(t, "acme", "acme", []string{"*"}, false)
	a.WaitFlyOrgReady(t, "acme")

	nsA, nsB := a.Namespace(t, "shop"), b.Namespace(t, "shop")
	_, livePeerA := admit(t, a, a.Client, pod(nsA, "web", nil))
	_, livePeerB := admit(t, b, b.Client, pod(nsB, "web", nil))

	// Orphans in each cluster's own name pattern, as a FlyPeer released
	// after the removal deadline leaves them.
	namer := func(e *managertest.Env) *peers.Namer {
		var ks corev1.Namespace
		if err := e.Client.Get(ctx, client.ObjectKey{Name: "kube-system"}, &ks); err != nil {
			t.Fatal(err)
		}
		n, err := peers.NewNamer("k8s-", peers.ClusterHash(ks.UID))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	orphan := func(n *peers.Namer, org string) string {
		keys, _ := wgquick.GenerateKeyPair()
		name := n.New(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "orphan"}}, "shop")
		if _, err := fly.AddPeer(org, name, keys.Public.String()); err != nil {
			t.Fatal(err)
		}
		return name
	}
	na, nb := namer(a), namer(b)
	if na.Cluster() == nb.Cluster() {
		t.Fatalf("both clusters have identity %s", na.Cluster())
	}
	orphanA, orphanAcme, orphanB := orphan(na, "personal"), orphan(na, "acme"), orphan(nb, "personal")

	managertest.WaitFor(t, "each cluster's orphans swept", func() bool {
		return !hasPeer(fly, "personal", orphanA) && !hasPeer(fly, "acme", orphanAcme) && !hasPeer(fly, "personal", orphanB)
	})
	// Many more sweeps, well past the grace period.
	time.Sleep(a.Config.SweepGrace + 10*a.Config.SweepInterval)
	for _, name := range []string{"k8s-laptop-1", livePeerA, livePeerB} {
		if !hasPeer(fly, "personal", name) {
			t.Errorf("peer %s was removed by a sweeper that does not own it", name)
		}
	}
}

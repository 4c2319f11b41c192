package peers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	"github.com/glaceon/glaceon/hack/controlplane"
	"github.com/glaceon/glaceon/webhook/inject"
)

// org is the Fly org every test peer lives in (a default org of flyapitest).
const org = "acme"

// waitTimeout bounds every wait on the control plane or the controller.
const waitTimeout = 60 * time.Second

func init() {
	// The manager gets its own logger; keep controller-runtime's global one
	// quiet instead of warning that it was never set.
	ctrl.SetLogger(logr.Discard())
}

// TestLifecycle runs the controller and sweeper in a manager against a real
// kube-apiserver and kube-controller-manager (its garbage collector deletes
// the Secret of a deleted pod), with flyapitest as the Fly API. Each subtest
// has its own namespace, Fly double and manager, configured for what it
// checks.
func TestLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the control plane (KUBEBUILDER_ASSETS=$(hack/control-plane.sh))")
	}
	cp := controlplane.StartForTest(t, controlplane.Options{})
	c, err := client.New(cp.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := testr.NewWithOptions(t, testr.Options{Verbosity: 1})

	t.Run("pod deletion removes the peer", func(t *testing.T) {
		e := newEnv(t, cp.Config, c, log, "t1")
		e.start(Options{Grace: time.Hour, SweepInterval: time.Hour})
		removedBefore := counterValue(peersRemoved.WithLabelValues(resultRemoved))

		peer := e.addPeer("k8s-t1-web-abc")
		pod := e.createPod("web", peer)
		sec := e.createSecret(peer, org)

		// Bound: one reference to the pod's UID, neither controller nor
		// blocking, and the wg-quick file untouched by the patch.
		e.waitFor("secret bound to the pod", func() (bool, error) {
			if err := c.Get(e.ctx, client.ObjectKeyFromObject(sec), sec); err != nil {
				return false, err
			}
			return len(sec.OwnerReferences) > 0, nil
		})
		want := metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}
		if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0] != want {
			t.Fatalf("ownerReferences = %+v, want [%+v]", sec.OwnerReferences, want)
		}
		if string(sec.Data[inject.SecretKeyWGConfig]) != wgConfigFor(peer) {
			t.Fatalf("binding changed the secret's data: %q", sec.Data[inject.SecretKeyWGConfig])
		}
		if !controllerutil.ContainsFinalizer(sec, inject.FinalizerPeerCleanup) {
			t.Fatal("finalizer lost while binding")
		}

		if err := c.Delete(e.ctx, pod); err != nil {
			t.Fatal(err)
		}
		e.waitGone(sec)
		if e.hasPeer(peer) {
			t.Errorf("Fly peer %s still exists after its pod and secret were deleted", peer)
		}
		if got := counterValue(peersRemoved.WithLabelValues(resultRemoved)) - removedBefore; got < 1 {
			t.Errorf("%s{result=removed} grew by %v, want ≥ 1", MetricPeersRemoved, got)
		}
	})

	t.Run("sweeper deletes the secret no pod claimed", func(t *testing.T) {
		e := newEnv(t, cp.Config, c, log, "t2")
		e.start(Options{Grace: 2 * time.Second, SweepInterval: 200 * time.Millisecond})
		orphanedBefore := counterValue(peersOrphaned.WithLabelValues(kindSecret))

		// The claimed pair is made first, so it is at least as old.
		claimedPeer := e.addPeer("k8s-t2-claimed")
		e.createPod("claimer", claimedPeer)
		claimed := e.createSecret(claimedPeer, org)
		lonePeer := e.addPeer("k8s-t2-lone")
		lone := e.createSecret(lonePeer, org)

		e.waitGone(lone)
		if e.hasPeer(lonePeer) {
			t.Errorf("Fly peer %s of the swept secret still exists", lonePeer)
		}
		if err := c.Get(e.ctx, client.ObjectKeyFromObject(claimed), claimed); err != nil {
			t.Fatalf("claimed secret: %v", err)
		}
		if claimed.DeletionTimestamp != nil || !e.hasPeer(claimedPeer) {
			t.Errorf("the claimed secret or its peer was removed (deletionTimestamp %v, peer present %v)",
				claimed.DeletionTimestamp, e.hasPeer(claimedPeer))
		}
		if got := counterValue(peersOrphaned.WithLabelValues(kindSecret)) - orphanedBefore; got != 1 {
			t.Errorf("%s{kind=secret} grew by %v, want 1", MetricPeersOrphaned, got)
		}
		e.waitEvent(lone.Name, ReasonUnclaimedSecretDeleted, lonePeer)
	})

	t.Run("sweeper removes Fly peers with our prefix and no secret", func(t *testing.T) {
		e := newEnv(t, cp.Config, c, log, "t3")
		orphanedBefore := counterValue(peersOrphaned.WithLabelValues(kindFly))
		// Seeded straight into the double: a leak from a crashed admission.
		// The orphan is added last: peers are listed oldest first, so the
		// others would be removed before it in the same sweep if they were
		// (wrongly) due.
		foreign := e.seedPeer(org, "laptop-of-someone")
		otherOrg := e.seedPeer("personal", "k8s-t3-other-org")
		kept := e.addPeer("k8s-t3-kept")
		e.createPod("keeper", kept)
		e.createSecret(kept, org)
		orphan := e.seedPeer(org, "k8s-t3-orphan")

		e.start(Options{Prefix: "k8s-t3-", Orgs: []string{org}, Grace: time.Second, SweepInterval: 200 * time.Millisecond})
		e.waitFor("orphaned Fly peer removed", func() (bool, error) { return !e.hasPeer(orphan), nil })
		for _, p := range []struct{ org, name string }{{org, foreign}, {"personal", otherOrg}, {org, kept}} {
			if !e.hasPeerIn(p.org, p.name) {
				t.Errorf("Fly peer %s/%s was removed; only %s/k8s-t3-* peers without a secret may be", p.org, p.name, org)
			}
		}
		if got := counterValue(peersOrphaned.WithLabelValues(kindFly)) - orphanedBefore; got != 1 {
			t.Errorf("%s{kind=fly} grew by %v, want 1", MetricPeersOrphaned, got)
		}
	})

	t.Run("Fly outage is retried until it clears", func(t *testing.T) {
		e := newEnv(t, cp.Config, c, log, "t4")
		e.start(Options{RemovalDeadline: time.Hour, RetryBaseDelay: 20 * time.Millisecond, RetryMaxDelay: 200 * time.Millisecond,
			DisableSweeper: true})
		peer := e.addPeer("k8s-t4-outage")
		sec := e.createSecret(peer, org)
		e.waitFor("finalizer on the secret", func() (bool, error) {
			err := c.Get(e.ctx, client.ObjectKeyFromObject(sec), sec)
			return err == nil && controllerutil.ContainsFinalizer(sec, inject.FinalizerPeerCleanup), err
		})

		e.fly.Faults().Set(flyapitest.Fault{Kind: flyapitest.Fault503})
		if err := c.Delete(e.ctx, sec); err != nil {
			t.Fatal(err)
		}
		e.waitFor("several failed removal attempts", func() (bool, error) { return e.fly.Faults().Fired() >= 4, nil })
		if err := c.Get(e.ctx, client.ObjectKeyFromObject(sec), sec); err != nil {
			t.Fatalf("secret released during the outage: %v", err)
		}
		if !controllerutil.ContainsFinalizer(sec, inject.FinalizerPeerCleanup) || !e.hasPeer(peer) {
			t.Fatalf("during the outage: finalizer present %v, peer present %v; want both",
				controllerutil.ContainsFinalizer(sec, inject.FinalizerPeerCleanup), e.hasPeer(peer))
		}

		e.fly.Faults().Clear()
		e.waitGone(sec)
		if e.hasPeer(peer) {
			t.Errorf("Fly peer %s still exists after the outage cleared", peer)
		}
	})

	t.Run("unauthorized removal is reported and retried", func(t *testing.T) {
		e := newEnv(t, cp.Config, c, log, "t5")
		e.start(Options{RemovalDeadline: time.Hour, RetryBaseDelay: 50 * time.Millisecond, RetryMaxDelay: 200 * time.Millisecond,
			DisableSweeper: true})
		peer := e.addPeer("k8s-t5-denied")
		sec := e.createSecret(peer, org)
		e.fly.Faults().Set(flyapitest.Fault{Kind: flyapitest.FaultHTTP401})
		if err := c.Delete(e.ctx, sec); err != nil {
			t.Fatal(err)
		}
		e.waitEvent(sec.Name, ReasonPeerRemovalUnauthorized, peer)
		e.fly.Faults().Clear()
		e.waitGone(sec)
		if e.hasPeer(peer) {
			t.Errorf("Fly peer %s still exists after the token was fixed", peer)
		}
	})

	t.Run("removal deadline releases the secret and the sweeper removes the peer", func(t *testing.T) {
		e := newEnv(t, cp.Config, c, log, "t6")
		abandonedBefore := counterValue(removalAbandoned)
		peer := e.addPeer("k8s-t6-abandoned")
		e.fly.Faults().Set(flyapitest.Fault{Kind: flyapitest.Fault502})
		e.start(Options{RemovalDeadline: time.Second, RetryBaseDelay: 50 * time.Millisecond, RetryMaxDelay: 200 * time.Millisecond,
			Prefix: "k8s-t6-", Orgs: []string{org}, Grace: time.Second, SweepInterval: 200 * time.Millisecond})
		sec := e.createSecret(peer, org)
		if err := c.Delete(e.ctx, sec); err != nil {
			t.Fatal(err)
		}

		e.waitGone(sec)
		if !e.hasPeer(peer) {
			t.Fatalf("Fly peer %s removed while every API call failed", peer)
		}
		e.waitEvent(sec.Name, ReasonPeerRemovalAbandoned, `"`+peer+`"`, `"`+org+`"`, "sweeper will remove")
		if got := counterValue(removalAbandoned) - abandonedBefore; got != 1 {
			t.Errorf("%s grew by %v, want 1", MetricRemovalAbandoned, got)
		}

		e.fly.Faults().Clear()
		e.waitFor("sweeper removes the abandoned peer", func() (bool, error) { return !e.hasPeer(peer), nil })
	})

	t.Run("namespace deletion removes the peers of its pods", func(t *testing.T) {
		e := newEnv(t, cp.Config, c, log, "t7")
		e.start(Options{Grace: time.Hour, SweepInterval: time.Hour})
		peer := e.addPeer("k8s-t7-ns")
		e.createPod("web", peer)
		sec := e.createSecret(peer, org)
		e.waitFor("secret bound to the pod", func() (bool, error) {
			err := c.Get(e.ctx, client.ObjectKeyFromObject(sec), sec)
			return err == nil && len(sec.OwnerReferences) == 1, err
		})
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}
		if err := c.Delete(e.ctx, ns); err != nil {
			t.Fatal(err)
		}
		e.waitFor("namespace deleted", func() (bool, error) {
			err := c.Get(e.ctx, client.ObjectKeyFromObject(ns), ns)
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if e.hasPeer(peer) {
			t.Errorf("Fly peer %s outlived its namespace", peer)
		}
	})

	t.Run("cache holds peer secret metadata and slim injected pods only", func(t *testing.T) {
		e := newEnv(t, cp.Config, c, log, "t8")
		peer := e.addPeer("k8s-t8-cached")
		e.createPod("injected", peer)
		e.createSecret(peer, org)
		other := []client.Object{
			// glaceon's serving certificate: managed by glaceon, no peer.
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "glaceon-serving-cert", Namespace: e.ns,
				Labels: map[string]string{inject.LabelManagedBy: inject.ManagedByValue}}},
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: e.ns}},
			&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: e.ns,
				Annotations: map[string]string{inject.AnnotationPeer: peer}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}}},
		}
		for _, o := range other {
			if err := c.Create(e.ctx, o); err != nil {
				t.Fatal(err)
			}
		}

		mgr, err := ctrl.NewManager(cp.Config, ctrl.Options{Logger: e.log, Metrics: metricsserver.Options{BindAddress: "0"}})
		if err != nil {
			t.Fatal(err)
		}
		pc, err := newCache(e.ctx, mgr)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(e.ctx)
		done := make(chan error, 1)
		go func() { done <- pc.Start(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("cache: %v", err)
			}
		}()
		if !pc.WaitForCacheSync(e.ctx) {
			t.Fatal("cache did not sync")
		}

		secrets := newSecretMetaList()
		if err := pc.List(e.ctx, secrets, client.InNamespace(e.ns)); err != nil {
			t.Fatal(err)
		}
		if len(secrets.Items) != 1 || secrets.Items[0].Name != peer {
			var names []string
			for _, s := range secrets.Items {
				names = append(names, s.Name)
			}
			t.Errorf("cached secrets %v, want only %s", names, peer)
		} else if len(secrets.Items[0].ManagedFields) != 0 {
			t.Error("cached secret keeps its managedFields")
		}
		var pods corev1.PodList
		if err := pc.List(e.ctx, &pods, client.InNamespace(e.ns)); err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) != 1 || pods.Items[0].Name != "injected" {
			t.Fatalf("cached pods %d, want only the injected one", len(pods.Items))
		}
		if p := pods.Items[0]; len(p.Spec.Containers) != 0 || len(p.Spec.Volumes) != 1 || p.UID == "" {
			t.Errorf("cached pod not slimmed to metadata and volumes: %d containers, %d volumes, uid %q",
				len(p.Spec.Containers), len(p.Spec.Volumes), p.UID)
		}
	})
}

// env is one subtest's world: a namespace, a Fly double and a manager.
type env struct {
	t      *testing.T
	ctx    context.Context
	cfg    *rest.Config
	c      client.Client
	log    logr.Logger
	ns     string
	fly    *flyapitest.Server
	flyAPI *flyapi.Client
}

func newEnv(t *testing.T, cfg *rest.Config, c client.Client, log logr.Logger, ns string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	srv := flyapitest.Start(t, flyapitest.Options{NoGateway: true, Logf: func(string, ...any) {}})
	api, err := flyapi.New(flyapi.Options{BaseURL: srv.URL(), Token: srv.Token(), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, cfg: cfg, c: c, log: log.WithName(ns), ns: ns, fly: srv, flyAPI: api}
	// Leave no Secret behind with a finalizer for another subtest's manager.
	t.Cleanup(func() {
		var list corev1.SecretList
		if err := c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		for i := range list.Items {
			s := &list.Items[i]
			if controllerutil.RemoveFinalizer(s, inject.FinalizerPeerCleanup) {
				_ = c.Update(context.Background(), s)
			}
			_ = c.Delete(context.Background(), s)
		}
	})
	return e
}

// start runs a manager with the package set up (Fly and clock filled in)
// until the subtest ends, and checks that it stops.
func (e *env) start(opts Options) {
	e.t.Helper()
	opts.Fly = e.flyAPI
	mgr, err := ctrl.NewManager(e.cfg, ctrl.Options{
		Logger:                 e.log,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		LeaderElection:         false,
		// Each subtest has a manager with the same controller name.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := SetupWithManager(mgr, opts); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("manager: %v", err)
			}
		case <-time.After(30 * time.Second):
			e.t.Error("manager did not stop within 30s")
		}
	})
}

// addPeer creates a peer at the double through the Fly API, as admission does.
func (e *env) addPeer(name string) string {
	e.t.Helper()
	kp, err := wgquick.GenerateKeyPair()
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.flyAPI.AddPeer(e.ctx, flyapi.AddPeerInput{Org: flyapi.Organization{Slug: org}, Name: name, PublicKey: kp.Public}); err != nil {
		e.t.Fatalf("add peer %s: %v", name, err)
	}
	return name
}

// seedPeer puts a peer straight into the double (no API, no faults).
func (e *env) seedPeer(orgSlug, name string) string {
	e.t.Helper()
	kp, err := wgquick.GenerateKeyPair()
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.fly.AddPeer(orgSlug, name, kp.Public.String()); err != nil {
		e.t.Fatalf("seed peer %s/%s: %v", orgSlug, name, err)
	}
	return name
}

func (e *env) hasPeer(name string) bool { return e.hasPeerIn(org, name) }

func (e *env) hasPeerIn(orgSlug, name string) bool {
	for _, p := range e.fly.Peers(orgSlug) {
		if p.Name == name {
			return true
		}
	}
	return false
}

func wgConfigFor(peer string) string { return "# wg-quick file of " + peer + "\n" }

// createSecret creates a peer Secret the way the webhook does.
func (e *env) createSecret(peer, orgSlug string) *corev1.Secret {
	e.t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: peer, Namespace: e.ns,
			Labels: map[string]string{
				inject.LabelManagedBy: inject.ManagedByValue,
				inject.LabelPeerName:  peer,
				inject.LabelPeerOrg:   orgSlug,
			},
			Finalizers: []string{inject.FinalizerPeerCleanup},
		},
		Data: map[string][]byte{inject.SecretKeyWGConfig: []byte(wgConfigFor(peer))},
	}
	if err := e.c.Create(e.ctx, s); err != nil {
		e.t.Fatal(err)
	}
	return s
}

// createPod creates an injected pod mounting its peer's Secret. It is never
// scheduled (there is no scheduler), so deleting it is immediate.
func (e *env) createPod(name, peer string) *corev1.Pod {
	e.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: e.ns,
			Labels:      map[string]string{inject.LabelInjected: "true"},
			Annotations: map[string]string{inject.AnnotationPeer: peer, inject.AnnotationTarget: "twi-ollama"},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
			Volumes: []corev1.Volume{{Name: inject.PeerVolumeName, VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: peer, DefaultMode: ptr.To[int32](0o400)},
			}}},
		},
	}
	if err := e.c.Create(e.ctx, p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// waitFor polls cond every 100ms until it holds, fails or waitTimeout passes.
func (e *env) waitFor(what string, cond func() (bool, error)) {
	e.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for: %s (last error: %v)", waitTimeout, what, lastErr)
		}
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("waiting for %s: %v", what, e.ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (e *env) waitGone(s *corev1.Secret) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("secret %s/%s deleted", s.Namespace, s.Name), func() (bool, error) {
		err := e.c.Get(e.ctx, client.ObjectKeyFromObject(s), &corev1.Secret{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// waitEvent waits for an events.k8s.io Event about the Secret with the
// reason, whose note mentions every word of mention.
func (e *env) waitEvent(secret, reason string, mention ...string) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("%s event about secret %s", reason, secret), func() (bool, error) {
		var list eventsv1.EventList
		if err := e.c.List(e.ctx, &list, client.InNamespace(e.ns)); err != nil {
			return false, err
		}
		var seen []string
		for _, ev := range list.Items {
			seen = append(seen, ev.Reason+": "+ev.Note)
			if ev.Reason != reason || ev.Regarding.Kind != "Secret" || ev.Regarding.Name != secret ||
				ev.ReportingController != ControllerName {
				continue
			}
			all := true
			for _, m := range mention {
				all = all && strings.Contains(ev.Note, m)
			}
			if all {
				return true, nil
			}
		}
		return false, fmt.Errorf("events so far: %q", seen)
	})
}

// counterValue reads a counter (the testutil package needs a module we do
// not have).
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

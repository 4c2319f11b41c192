package machineproxy_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/hack/localpod"
	"github.com/glaceon/glaceon/hack/testkit"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
	. "github.com/glaceon/glaceon/webhook/machineproxy"
	"github.com/glaceon/glaceon/webhook/manager"
	"github.com/glaceon/glaceon/webhook/manager/managertest"
	"github.com/glaceon/glaceon/webhook/peers"
)

// env is the shared test environment (managertest): a real control plane
// (etcd, kube-apiserver calling the webhook over TLS with the manager's own
// certificate, kube-controller-manager), the Fly double, and the whole
// manager as cmd/glaceon builds it with manager.New: the pod webhook, the
// peer lifecycle and the MachineProxy controller.
type env struct {
	fly *flyapitest.Server
	c   client.Client // uncached, so assertions see the API server
}

func startEnv(t *testing.T) *env {
	t.Helper()
	logTo(t)
	*ConflictRetry = time.Second
	m := managertest.StartWith(t, managertest.Options{Configure: func(cfg *manager.Config) {
		cfg.Log = logf.Log
		cfg.PeerOptions = func(o *peers.Options) {
			o.DisableSweeper = true
			o.RetryBaseDelay = 50 * time.Millisecond
		}
	}})
	return &env{fly: m.Fly, c: m.Client}
}

func (e *env) namespace(t *testing.T, name string) {
	t.Helper()
	if err := e.c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
}

// pods lists the proxy pods of MachineProxy name.
func (e *env) pods(t *testing.T, ns, name string) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	if err := e.c.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{LabelInstance: name}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func (e *env) peerSecrets(t *testing.T, ns string) []corev1.Secret {
	t.Helper()
	var list corev1.SecretList
	if err := e.c.List(context.Background(), &list, client.InNamespace(ns), client.HasLabels{inject.LabelPeerName}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func (e *env) get(t *testing.T, ns, name string) *glaceonv1alpha1.MachineProxy {
	t.Helper()
	mp := &glaceonv1alpha1.MachineProxy{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, mp); err != nil {
		t.Fatal(err)
	}
	return mp
}

func (e *env) update(t *testing.T, ns, name string, change func(*glaceonv1alpha1.MachineProxy)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		mp := e.get(t, ns, name)
		change(mp)
		err := e.c.Update(ctx, mp)
		return err == nil, ignoreConflict(err)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func ignoreConflict(err error) error {
	if apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// markReady does what a kubelet would once the proxy's /readyz answers.
func (e *env) markReady(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	pod = pod.DeepCopy()
	now := metav1.Now()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.Conditions = append(pod.Status.Conditions,
		corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now})
	if err := e.c.Status().Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
}

// peersAtFly are the names of the Fly peers of org personal.
func (e *env) peersAtFly() map[string]bool {
	names := map[string]bool{}
	for _, p := range e.fly.Peers("personal") {
		names[p.Name] = true
	}
	return names
}

// podsHaveOwnPeers checks that every pod names a distinct peer that exists
// at Fly, mounts that peer's Secret, and that nothing else exists at Fly
// or as a peer Secret.
func (e *env) podsHaveOwnPeers(pods []corev1.Pod, secrets []corev1.Secret) error {
	atFly := e.peersAtFly()
	if len(atFly) != len(pods) || len(secrets) != len(pods) {
		return fmt.Errorf("%d pods, %d peer Secrets, %d Fly peers", len(pods), len(secrets), len(atFly))
	}
	seen := map[string]bool{}
	for _, pod := range pods {
		peer := pod.Annotations[inject.AnnotationPeer]
		switch {
		case peer == "" || seen[peer]:
			return fmt.Errorf("pod %s has peer %q (empty or shared)", pod.Name, peer)
		case !atFly[peer]:
			return fmt.Errorf("pod %s's peer %s is not at Fly", pod.Name, peer)
		case localpod.PeerSecretName(&pod) != peer:
			return fmt.Errorf("pod %s mounts Secret %q, want its peer's %s", pod.Name, localpod.PeerSecretName(&pod), peer)
		}
		// Replicas get their peers through the same FlyPeer path as any pod.
		var fp glaceonv1alpha1.FlyPeer
		if err := e.c.Get(context.Background(), client.ObjectKey{Name: peer}, &fp); err != nil {
			return fmt.Errorf("pod %s's FlyPeer %s: %w", pod.Name, peer, err)
		}
		if fp.Spec.Pod.UID != pod.UID {
			return fmt.Errorf("FlyPeer %s is bound to pod UID %q, not %s's", peer, fp.Spec.Pod.UID, pod.Name)
		}
		seen[peer] = true
	}
	return nil
}

func condition(mp *glaceonv1alpha1.MachineProxy, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(mp.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func TestMachineProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a control plane")
	}
	t.Parallel() // its own control plane; TestSchemaValidation has another
	e := startEnv(t)
	ctx := context.Background()
	const ns, name = "flycast", "twi-ollama"
	e.namespace(t, ns)

	t.Run("create: Deployment, Service and PDB, one peer per pod", func(t *testing.T) {
		// The earlier operator's example, unchanged but for the group.
		mp := NewMachineProxy(WithName(name), WithOrg("personal"), WithRegion("yyz"), WithTarget("http://twi-ollama.flycast"), WithPort(80))
		mp.UID, mp.Generation = "", 0
		if err := e.c.Create(ctx, mp); err != nil {
			t.Fatal(err)
		}
		if got := ptr.Deref(mp.Spec.Replicas, -1); got != 2 {
			t.Errorf("defaulted replicas = %d, want 2", got)
		}
		key := client.ObjectKey{Namespace: ns, Name: name}
		managertest.WaitFor(t, "ServiceAccount, Deployment, Service and PDB", func() bool {
			return e.c.Get(ctx, key, &appsv1.Deployment{}) == nil && e.c.Get(ctx, key, &corev1.Service{}) == nil &&
				e.c.Get(ctx, key, &policyv1.PodDisruptionBudget{}) == nil && e.c.Get(ctx, key, &corev1.ServiceAccount{}) == nil
		})
		for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &policyv1.PodDisruptionBudget{}, &corev1.ServiceAccount{}} {
			if err := e.c.Get(ctx, key, obj); err != nil {
				t.Fatal(err)
			}
			if ref := metav1.GetControllerOf(obj); ref == nil || ref.Kind != "MachineProxy" || ref.Name != name {
				t.Errorf("%T has controller %v, want the MachineProxy", obj, ref)
			}
		}
		svc := &corev1.Service{}
		_ = e.c.Get(ctx, key, svc)
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80 {
			t.Errorf("Service ports = %+v, want one on 80", svc.Spec.Ports)
		}

		var lastErr error
		managertest.WaitFor(t, "two admitted pods with a peer each", func() bool {
			lastErr = e.podsHaveOwnPeers(e.pods(t, ns, name), e.peerSecrets(t, ns))
			return lastErr == nil
		})
		for _, pod := range e.pods(t, ns, name) {
			if len(pod.Spec.Containers) != 1 || len(pod.Spec.InitContainers) != 0 || len(pod.Spec.HostAliases) != 0 {
				t.Errorf("pod %s: peer-only admission added containers or aliases: %+v", pod.Name, pod.Spec)
			}
		}

		managertest.WaitFor(t, "status: progressing, not ready, with the reason", func() bool {
			mp := e.get(t, ns, name)
			ready, progressing := condition(mp, glaceonv1alpha1.ConditionReady), condition(mp, glaceonv1alpha1.ConditionProgressing)
			return mp.Status.ObservedGeneration == mp.Generation && mp.Status.Replicas == 2 &&
				ready.Status == metav1.ConditionFalse && ready.Reason == ReasonNoReplicasReady &&
				progressing.Status == metav1.ConditionTrue && progressing.Reason == ReasonRollingOut
		})
		got := e.get(t, ns, name)
		if msg := condition(got, glaceonv1alpha1.ConditionReady).Message; !strings.Contains(msg, "Ready condition") {
			t.Errorf("Ready message %q does not say where readiness comes from", msg)
		}
		if got.Status.ServiceDNSName != "twi-ollama.flycast.svc.cluster.local" {
			t.Errorf("serviceDNSName = %q", got.Status.ServiceDNSName)
		}
		if c := condition(got, glaceonv1alpha1.ConditionDegraded); c.Status != metav1.ConditionFalse {
			t.Errorf("Degraded = %+v, want False", c)
		}
	})

	t.Run("a ready pod makes the proxy Ready", func(t *testing.T) {
		e.markReady(t, &e.pods(t, ns, name)[0])
		managertest.WaitFor(t, "Ready=True with 1/2", func() bool {
			mp := e.get(t, ns, name)
			c := condition(mp, glaceonv1alpha1.ConditionReady)
			return c.Status == metav1.ConditionTrue && mp.Status.ReadyReplicas == 1 && strings.HasPrefix(c.Message, "1/2 replicas ready")
		})
	})

	t.Run("one replica's sidecar serves the app through the Service port", func(t *testing.T) {
		sidecarBin := testkit.SidecarBinary(t)
		pod := e.pods(t, ns, name)[0]
		secret := &corev1.Secret{}
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: localpod.PeerSecretName(&pod)}, secret); err != nil {
			t.Fatal(err)
		}
		svc := &corev1.Service{}
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, svc); err != nil {
			t.Fatal(err)
		}
		// Service port 80 → its named targetPort → the container's listener.
		listen := ""
		for _, p := range pod.Spec.Containers[0].Ports {
			if p.Name == svc.Spec.Ports[0].TargetPort.StrVal {
				listen = fmt.Sprintf("[::]:%d", p.ContainerPort) // every address family
			}
		}
		// localpod runs the container named glaceon-sidecar; the proxy's
		// container is that binary under another name.
		runnable := pod.DeepCopy()
		runnable.Spec.Containers[0].Name = inject.SidecarContainerName
		proc := localpod.StartForTest(t, sidecarBin, runnable, secret)
		local, ok := proc.Forwards[listen]
		if !ok {
			t.Fatalf("no forward listening on %s (Service port %d): %v", listen, svc.Spec.Ports[0].Port, proc.Forwards)
		}
		url := "http://" + strings.Replace(local, "[::]", "127.0.0.1", 1) + "/" // dual-stack: IPv4 loopback works too
		// No keep-alive: an idle connection would hold up the drain on Stop.
		resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Get(url)
		if err != nil {
			t.Fatalf("GET through the proxy: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := strings.TrimSpace(string(body)); got != "ok twi-ollama" {
			t.Errorf("answer through the proxy = %q, want %q", got, "ok twi-ollama")
		}
	})

	t.Run("scale 2 → 3 → 1: peers follow", func(t *testing.T) {
		// Through the scale subresource, as `kubectl scale mp` or an HPA.
		scale := &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 3}}
		if err := e.c.SubResource("scale").Update(ctx, e.get(t, ns, name), client.WithSubResourceBody(scale)); err != nil {
			t.Fatal(err)
		}
		var lastErr error
		managertest.WaitFor(t, "three pods with a peer each", func() bool {
			pods := e.pods(t, ns, name)
			lastErr = e.podsHaveOwnPeers(pods, e.peerSecrets(t, ns))
			return len(pods) == 3 && lastErr == nil
		})

		e.update(t, ns, name, func(mp *glaceonv1alpha1.MachineProxy) { mp.Spec.Replicas = ptr.To[int32](1) })
		managertest.WaitFor(t, "one pod, one peer, one Secret", func() bool {
			pods := e.pods(t, ns, name)
			lastErr = e.podsHaveOwnPeers(pods, e.peerSecrets(t, ns))
			return len(pods) == 1 && lastErr == nil
		})
		got := &autoscalingv1.Scale{}
		if err := e.c.SubResource("scale").Get(ctx, e.get(t, ns, name), got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.Replicas != 1 || got.Status.Selector == "" {
			t.Errorf("scale = %+v, want 1 replica and the pods' selector", got)
		}
		managertest.WaitFor(t, "no PDB at one replica", func() bool {
			err := e.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &policyv1.PodDisruptionBudget{})
			return apierrors.IsNotFound(err)
		})
	})

	t.Run("a target change rolls out to new pods with new peers", func(t *testing.T) {
		old := e.pods(t, ns, name)[0]
		e.update(t, ns, name, func(mp *glaceonv1alpha1.MachineProxy) {
			mp.Spec.Target, mp.Spec.Port = "echo.flycast:7", nil
		})
		var fresh corev1.Pod
		managertest.WaitFor(t, "a pod of the new revision", func() bool {
			for _, p := range e.pods(t, ns, name) {
				if p.Annotations[inject.AnnotationTarget] == "echo.flycast:7" {
					fresh = p
					return true
				}
			}
			return false
		})
		// maxUnavailable 0: the old pod goes once the new one is ready.
		e.markReady(t, &fresh)
		managertest.WaitFor(t, "old pod and its peer gone", func() bool {
			pods := e.pods(t, ns, name)
			return len(pods) == 1 && pods[0].UID == fresh.UID && !e.peersAtFly()[old.Annotations[inject.AnnotationPeer]] &&
				e.podsHaveOwnPeers(pods, e.peerSecrets(t, ns)) == nil
		})
		managertest.WaitFor(t, "rollout complete", func() bool {
			mp := e.get(t, ns, name)
			c := condition(mp, glaceonv1alpha1.ConditionProgressing)
			return c.Reason == ReasonRolloutComplete && c.ObservedGeneration == mp.Generation &&
				len(mp.Status.Targets) == 1 && mp.Status.Targets[0] == glaceonv1alpha1.MachineProxyTarget{Target: "echo.flycast:7", Port: 7}
		})
	})

	t.Run("a spec the schema allows but no Service can serve: False condition, nothing touched", func(t *testing.T) {
		dep := &appsv1.Deployment{}
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, dep); err != nil {
			t.Fatal(err)
		}
		e.update(t, ns, name, func(mp *glaceonv1alpha1.MachineProxy) { mp.Spec.Target = "twi-ollama.flycast,echo.flycast:80" })
		managertest.WaitFor(t, "Ready=False InvalidSpec", func() bool {
			mp := e.get(t, ns, name)
			c := condition(mp, glaceonv1alpha1.ConditionReady)
			return c.Reason == ReasonInvalidSpec && c.ObservedGeneration == mp.Generation &&
				strings.Contains(c.Message, "both be served on Service port 80")
		})
		after := &appsv1.Deployment{}
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, after); err != nil {
			t.Fatal(err)
		}
		if after.Generation != dep.Generation {
			t.Errorf("Deployment changed (generation %d → %d) for an invalid spec", dep.Generation, after.Generation)
		}
		var events eventsList
		managertest.WaitFor(t, "a Warning Event", func() bool {
			events = e.events(t, ns, ReasonInvalidSpec)
			return len(events) > 0
		})
		e.update(t, ns, name, func(mp *glaceonv1alpha1.MachineProxy) { mp.Spec.Target = "echo.flycast:7" })
	})

	t.Run("delete: nothing left in the cluster or at Fly", func(t *testing.T) {
		if err := e.c.Delete(ctx, e.get(t, ns, name)); err != nil {
			t.Fatal(err)
		}
		key := client.ObjectKey{Namespace: ns, Name: name}
		managertest.WaitFor(t, "children, pods, Secrets and peers gone", func() bool {
			return apierrors.IsNotFound(e.c.Get(ctx, key, &appsv1.Deployment{})) &&
				apierrors.IsNotFound(e.c.Get(ctx, key, &corev1.Service{})) &&
				apierrors.IsNotFound(e.c.Get(ctx, key, &policyv1.PodDisruptionBudget{})) &&
				len(e.pods(t, ns, name)) == 0 && len(e.peerSecrets(t, ns)) == 0 && len(e.peersAtFly()) == 0
		})
	})

	t.Run("a Service of that name belongs to someone else: NameConflict until it goes", func(t *testing.T) {
		// As after the one-command migration from the earlier operator,
		// whose Service keeps the name until its MachineProxy is deleted.
		const legacy = "legacy"
		foreign := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: legacy, Namespace: ns},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 5432}}, Selector: map[string]string{"app": "old"}},
		}
		if err := e.c.Create(ctx, foreign); err != nil {
			t.Fatal(err)
		}
		mp := NewMachineProxy(WithName(legacy), WithTarget("db.internal:5432"), WithReplicas(1))
		mp.Namespace, mp.UID, mp.Generation = ns, "", 0
		if err := e.c.Create(ctx, mp); err != nil {
			t.Fatal(err)
		}
		managertest.WaitFor(t, "Degraded=True NameConflict", func() bool {
			c := condition(e.get(t, ns, legacy), glaceonv1alpha1.ConditionDegraded)
			return c.Reason == ReasonNameConflict && strings.Contains(c.Message, "Service legacy already exists")
		})
		if len(e.events(t, ns, ReasonNameConflict)) == 0 {
			t.Error("no NameConflict Event")
		}
		svc := &corev1.Service{}
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(foreign), svc); err != nil || metav1.GetControllerOf(svc) != nil {
			t.Fatalf("the foreign Service was touched: %v %+v", err, svc.OwnerReferences)
		}

		if err := e.c.Delete(ctx, foreign); err != nil {
			t.Fatal(err)
		}
		managertest.WaitFor(t, "the proxy's own Service, Degraded=False", func() bool {
			err := e.c.Get(ctx, client.ObjectKeyFromObject(foreign), svc)
			c := condition(e.get(t, ns, legacy), glaceonv1alpha1.ConditionDegraded)
			return err == nil && metav1.GetControllerOf(svc) != nil && c.Status == metav1.ConditionFalse
		})

		if err := e.c.Delete(ctx, e.get(t, ns, legacy)); err != nil {
			t.Fatal(err)
		}
		managertest.WaitFor(t, "its pods and peers gone", func() bool {
			return len(e.pods(t, ns, legacy)) == 0 && len(e.peersAtFly()) == 0
		})
	})

}

type eventsList = []corev1.Event

func (e *env) events(t *testing.T, ns, reason string) eventsList {
	t.Helper()
	var list corev1.EventList
	if err := e.c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out eventsList
	for _, ev := range list.Items {
		if ev.Reason == reason {
			out = append(out, ev)
		}
	}
	return out
}

// testLog is the test that controller-runtime's global logger writes to;
// the logger can be set only once per process, and a test must not be
// logged to once it has completed (-count=2 would panic).
var testLog atomic.Pointer[testing.T]

func init() {
	logf.SetLogger(funcr.New(func(prefix, args string) {
		if t := testLog.Load(); t != nil {
			t.Log(prefix, args)
		}
	}, funcr.Options{}))
}

// logTo sends controller-runtime's logs to t until t's cleanups are done
// (registered first, so it runs after the manager stopped).
func logTo(t *testing.T) {
	testLog.Store(t)
	t.Cleanup(func() { testLog.CompareAndSwap(t, nil) })
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(testkit.Run(m))
}

package admission_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	"github.com/glaceon/glaceon/hack/localpod"
	"github.com/glaceon/glaceon/hack/testkit"
	glaceonadmission "github.com/glaceon/glaceon/webhook/admission"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/manager"
	"github.com/glaceon/glaceon/webhook/manager/managertest"
	"github.com/glaceon/glaceon/webhook/pool"
)

// env is one control plane + Fly double + the whole manager, shared by the
// subtests: starting a control plane costs seconds.
type env struct {
	*managertest.Env
	fly   *flyapitest.Server
	c     client.Client
	calls atomic.Int64 // admission requests that reached the webhook
	// dropResponse makes the webhook provision as usual and then fail the
	// request, as when the manager dies before answering.
	dropResponse atomic.Bool

	mu       sync.Mutex
	handling []time.Duration // time spent in the webhook per request
	// steps[pod][step] is when an admission reached each step, for the
	// benchmark's cost of each write.
	steps map[string]map[string]time.Time
}

func TestMain(m *testing.M) {
	// The managers log through their own loggers; client-go's request
	// logging goes to controller-runtime's global one, which would
	// otherwise print a "SetLogger was never called" stack mid-benchmark.
	logf.SetLogger(logr.Discard())
	os.Exit(testkit.Run(m))
}

// startEnv starts the manager as `glaceon manager` wires it, with a fast
// sweeper, and counts the admissions that reach its webhook.
func startEnv(t testing.TB, flyTimeout time.Duration) *env {
	t.Helper()
	e := &env{}
	e.Env = managertest.Start(t, func(cfg *manager.Config) {
		cfg.FlyTimeout = flyTimeout
		cfg.SweepGrace, cfg.SweepInterval, cfg.AllowShortGrace = 2*time.Second, 500*time.Millisecond, true
		cfg.AdmissionTestHook = func(step, pod string) error {
			now := time.Now()
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.steps == nil {
				e.steps = map[string]map[string]time.Time{}
			}
			if e.steps[pod] == nil {
				e.steps[pod] = map[string]time.Time{}
			}
			e.steps[pod][step] = now
			return nil
		}
		cfg.AdmissionMiddleware = func(next admission.Handler) admission.Handler {
			return admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
				e.calls.Add(1)
				start := time.Now()
				resp := next.Handle(ctx, req)
				e.mu.Lock()
				e.handling = append(e.handling, time.Since(start))
				e.mu.Unlock()
				if e.dropResponse.Load() {
					return admission.Errored(http.StatusInternalServerError, errors.New("simulated crash after provisioning"))
				}
				return resp
			})
		}
	})
	e.fly, e.c = e.Fly, e.Client
	return e
}

func (e *env) namespace(t testing.TB, name string) string { return e.Namespace(t, name) }

// annotatedDeployment is a one-replica Deployment whose pod template carries
// annotations.
func annotatedDeployment(ns, name string, annotations map[string]string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec:       managertest.Pod(ns, name, nil).Spec,
			},
		},
	}
}

func (e *env) secrets(t *testing.T, ns string) []corev1.Secret {
	t.Helper()
	var list corev1.SecretList
	if err := e.c.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{inject.LabelManagedBy: inject.ManagedByValue}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func sidecarOf(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == inject.SidecarContainerName {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}

func TestAdmission(t *testing.T) {
	e := startEnv(t, 3*time.Second)
	ctx := context.Background()

	t.Run("deployment pod gets a peer, a secret and the sidecar", func(t *testing.T) {
		ns := e.namespace(t, "deploy")
		deploy := annotatedDeployment(ns, "web", map[string]string{inject.AnnotationTarget: "twi-ollama.flycast:80"})
		if err := e.c.Create(ctx, deploy); err != nil {
			t.Fatal(err)
		}
		pod := waitForPod(t, e.c, ns)
		if pod.GenerateName == "" {
			t.Errorf("pod %s was not created with generateName", pod.Name)
		}
		sc := sidecarOf(pod)
		if sc == nil || sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Fatalf("no native sidecar in %+v", pod.Spec.InitContainers)
		}
		peerName := pod.Annotations[inject.AnnotationPeer]
		if !strings.HasPrefix(peerName, "k8s-deploy-web-") {
			t.Errorf("peer annotation = %q, want k8s-deploy-web-<rand>", peerName)
		}
		peers := e.fly.Peers("personal")
		if len(peers) != 1 || peers[0].Name != peerName {
			t.Fatalf("Fly peers = %+v, want exactly %s", peers, peerName)
		}
		secrets := e.secrets(t, ns)
		if len(secrets) != 1 || secrets[0].Name != peerName {
			t.Fatalf("peer secrets = %d, want one named %s", len(secrets), peerName)
		}
		s := secrets[0]
		if len(s.Finalizers) != 0 || len(s.Data) != 1 {
			t.Errorf("secret has finalizers %v and keys %d; want none and only the wg-quick file", s.Finalizers, len(s.Data))
		}
		cfg, err := wgquick.Parse(s.Data[inject.SecretKeyWGConfig])
		if err != nil {
			t.Fatalf("secret holds no valid wg-quick file: %v", err)
		}
		if cfg.PrivateKey.PublicKey().String() != peers[0].PublicKey {
			t.Errorf("secret's private key does not match the peer's public key at Fly")
		}
		for k, v := range pod.Annotations {
			if strings.Contains(v, cfg.PrivateKey.String()) {
				t.Errorf("annotation %s holds the private key", k)
			}
		}

		// The FlyPeer controller binds the FlyPeer to the pod.
		managertest.WaitFor(t, "FlyPeer bound to its pod", func() bool {
			var fp glaceonv1alpha1.FlyPeer
			if err := e.c.Get(ctx, client.ObjectKey{Name: peerName}, &fp); err != nil {
				return false
			}
			return fp.Spec.Pod.UID == pod.UID && fp.Spec.Pod.Name == pod.Name && fp.Status.Phase == glaceonv1alpha1.FlyPeerBound &&
				fp.Spec.Pod.Namespace == ns && fp.Spec.PublicKey == peers[0].PublicKey
		})

		// Run the injected sidecar from the pod's spec and the Secret, and
		// fetch the app through it as the app would.
		proc := localpod.StartForTest(t, testkit.SidecarBinary(t), pod, &s)
		if got := proc.GetForTest(t, "127.0.0.2:80", "/"); got != "ok twi-ollama" {
			t.Errorf("answer through the tunnel = %q, want %q", got, "ok twi-ollama")
		}

		// Pod deleted (the Deployment deleted) → FlyPeer deleted → Fly peer
		// removed by its finalizer → Secret deleted.
		if err := e.c.Delete(ctx, deploy); err != nil {
			t.Fatal(err)
		}
		managertest.WaitFor(t, "peer and secret gone after the pod", func() bool {
			return len(e.fly.Peers("personal")) == 0 && len(e.secrets(t, ns)) == 0 && len(e.FlyPeers(t)) == 0
		})
	})

	t.Run("rejected after admission: the sweeper removes peer and secret", func(t *testing.T) {
		ns := e.namespace(t, "rejected")
		// Mutating webhooks run before validation: an empty image passes
		// the webhook and fails the API server's own checks.
		pod := managertest.Pod(ns, "rejected", map[string]string{inject.AnnotationTarget: "twi-ollama"})
		pod.Spec.Containers[0].Image = ""
		if err := e.c.Create(ctx, pod); err == nil {
			t.Fatal("invalid pod was created")
		}
		managertest.WaitFor(t, "orphaned peer and secret swept", func() bool {
			return len(e.fly.Peers("personal")) == 0 && len(e.secrets(t, ns)) == 0
		})
	})

	t.Run("manager dies before answering: the sweeper removes peer and secret", func(t *testing.T) {
		ns := e.namespace(t, "crash")
		e.dropResponse.Store(true)
		err := e.c.Create(ctx, managertest.Pod(ns, "crash", map[string]string{inject.AnnotationTarget: "twi-ollama"}))
		e.dropResponse.Store(false)
		if err == nil {
			t.Fatal("pod was created although the webhook failed")
		}
		if len(e.secrets(t, ns)) != 1 {
			t.Fatalf("want the half-made secret to exist before the sweep")
		}
		managertest.WaitFor(t, "orphaned peer and secret swept", func() bool {
			return len(e.fly.Peers("personal")) == 0 && len(e.secrets(t, ns)) == 0
		})
	})

	t.Run("a FlyOrg lets the namespaces it names use another org", func(t *testing.T) {
		ns := e.namespace(t, "team-a")
		e.CreateFlyOrg(t, "acme", "acme", []string{"team-*"}, false)
		defer e.c.Delete(ctx, &glaceonv1alpha1.FlyOrg{ObjectMeta: metav1.ObjectMeta{Name: "acme"}})
		e.WaitFlyOrgReady(t, "acme")
		pod := managertest.Pod(ns, "acme-user", map[string]string{inject.AnnotationTarget: "twi-ollama", inject.AnnotationOrg: "acme"})
		// The webhook's cache sees the FlyOrg's status within moments.
		managertest.WaitFor(t, "pod admitted with the new FlyOrg", func() bool { return e.c.Create(ctx, pod.DeepCopy()) == nil })
		if n := len(e.fly.Peers("acme")); n != 1 {
			t.Errorf("acme has %d peers, want 1", n)
		}
		// Deleting the FlyOrg waits for its FlyPeers: their finalizers need
		// its token.
		if err := e.c.Delete(ctx, &glaceonv1alpha1.FlyOrg{ObjectMeta: metav1.ObjectMeta{Name: "acme"}}); err != nil {
			t.Fatal(err)
		}
		managertest.WaitFor(t, "acme waiting for its FlyPeer", func() bool {
			c := e.FlyOrgReady(t, "acme")
			return c != nil && c.Reason == "WaitingForFlyPeers"
		})
		if err := e.c.Create(ctx, managertest.Pod(ns, "too-late", map[string]string{inject.AnnotationTarget: "twi-ollama", inject.AnnotationOrg: "acme"})); err == nil || !strings.Contains(err.Error(), `FlyOrg "acme" is being deleted`) {
			t.Errorf("a pod for a deleted FlyOrg: %v", err)
		}
		if err := e.c.Delete(ctx, pod); err != nil {
			t.Fatal(err)
		}
		managertest.WaitFor(t, "acme peer removed with its pod, then the FlyOrg gone", func() bool {
			var org glaceonv1alpha1.FlyOrg
			return len(e.fly.Peers("acme")) == 0 && apierrors.IsNotFound(e.c.Get(ctx, client.ObjectKey{Name: "acme"}, &org))
		})
	})

	t.Run("pods without the annotation never reach the webhook", func(t *testing.T) {
		ns := e.namespace(t, "plain")
		before := e.calls.Load()
		pod := managertest.Pod(ns, "plain", map[string]string{"other": "x"})
		if err := e.c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		if got := e.calls.Load() - before; got != 0 {
			t.Errorf("webhook called %d times for a pod without %s", got, inject.AnnotationTarget)
		}
		if len(pod.Spec.InitContainers) != 0 || len(pod.Spec.Containers) != 1 {
			t.Errorf("plain pod was changed: %+v", pod.Spec)
		}
	})

	t.Run("dry run creates nothing and has the same shape", func(t *testing.T) {
		ns := e.namespace(t, "dryrun")
		pod := managertest.Pod(ns, "dry", map[string]string{inject.AnnotationTarget: "http://twi-ollama.flycast"})
		if err := e.c.Create(ctx, pod, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		if sidecarOf(pod) == nil || pod.Annotations[inject.AnnotationPeer] != inject.PlaceholderPeerName {
			t.Errorf("dry-run pod lacks the placeholder injection: %v / %v", pod.Annotations, pod.Spec.InitContainers)
		}
		if n := len(e.fly.Peers("personal")); n != 0 {
			t.Errorf("dry run changed the Fly peers: %d", n)
		}
		if n := len(e.secrets(t, ns)); n != 0 {
			t.Errorf("dry run created %d secrets", n)
		}
	})

	t.Run("a denied Deployment pod is explained on its ReplicaSet", func(t *testing.T) {
		ns := e.namespace(t, "explained")
		deploy := annotatedDeployment(ns, "bad", map[string]string{inject.AnnotationTarget: "example.com:80"})
		if err := e.c.Create(ctx, deploy); err != nil {
			t.Fatal(err)
		}
		// Users look at `kubectl describe` of the ReplicaSet when pods do
		// not appear: the reason must be there.
		managertest.WaitFor(t, "a GlaceonInjectionDenied event on the ReplicaSet", func() bool {
			var events eventsv1.EventList
			if err := e.c.List(ctx, &events, client.InNamespace(ns)); err != nil {
				return false
			}
			for _, ev := range events.Items {
				if ev.Reason == glaceonadmission.ReasonDenied && ev.Regarding.Kind == "ReplicaSet" && strings.Contains(ev.Note, "example.com") {
					return true
				}
			}
			return false
		})
		if err := e.c.Delete(ctx, deploy); err != nil {
			t.Fatal(err)
		}
	})

	denials := []struct {
		name        string
		annotations map[string]string
		mutate      func(*corev1.Pod)
		faults      []flyapitest.Fault
		want        []string
	}{
		{
			name:        "bad target and region, all reported",
			annotations: map[string]string{inject.AnnotationTarget: "example.com:80,twi-ollama.flycast:99999", inject.AnnotationRegion: "NOT A REGION"},
			want:        []string{"glaceon.fly/target", "example.com", "99999", "glaceon.fly/region"},
		},
		{
			name:        "host network",
			annotations: map[string]string{inject.AnnotationTarget: "twi-ollama"},
			mutate:      func(p *corev1.Pod) { p.Spec.HostNetwork = true },
			want:        []string{"hostNetwork"},
		},
		{
			name:        "org the namespace may not use",
			annotations: map[string]string{inject.AnnotationTarget: "twi-ollama", inject.AnnotationOrg: "acme"},
			want:        []string{`may not use FlyOrg "acme"`, "it may use personal"},
		},
		{
			name:        "token rejected",
			annotations: map[string]string{inject.AnnotationTarget: "twi-ollama"},
			faults:      []flyapitest.Fault{{Kind: flyapitest.FaultHTTP401}},
			want:        []string{"Fly API rejected the token of FlyOrg personal (secret glaceon-system/fly-api-token, key token"},
		},
		{
			name:        "Fly down",
			annotations: map[string]string{inject.AnnotationTarget: "twi-ollama"},
			faults:      []flyapitest.Fault{{Kind: flyapitest.Fault503}},
			want:        []string{"retrying is safe"},
		},
		{
			name:        "Fly slow",
			annotations: map[string]string{inject.AnnotationTarget: "twi-ollama"},
			faults:      []flyapitest.Fault{{Kind: flyapitest.FaultSlow, Delay: 6 * time.Second}},
			want:        []string{"did not answer within 3s", "retrying is safe"},
		},
	}
	for i, tt := range denials {
		t.Run("denied: "+tt.name, func(t *testing.T) {
			ns := e.namespace(t, fmt.Sprintf("deny-%d", i))
			peersBefore := len(e.fly.Peers("personal"))
			e.fly.Faults().Set(tt.faults...)
			defer e.fly.Faults().Clear()
			// A fresh org lookup each time, so faults on it are seen.
			pod := managertest.Pod(ns, "denied", tt.annotations)
			if tt.mutate != nil {
				tt.mutate(pod)
			}
			err := e.c.Create(ctx, pod)
			if err == nil {
				t.Fatalf("pod was admitted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("denial %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), e.fly.Token()) {
				t.Errorf("denial contains the token")
			}
			e.fly.Faults().Clear()
			// A rolled-back peer is removed by its FlyPeer's finalizer.
			managertest.WaitFor(t, "nothing left", func() bool {
				return len(e.fly.Peers("personal")) == peersBefore && len(e.secrets(t, ns)) == 0 && len(e.FlyPeers(t)) == peersBefore
			})
		})
	}
}

func waitForPod(t *testing.T, c client.Client, ns string) *corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := c.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			return false, err
		}
		return len(pods.Items) > 0, nil
	})
	if err != nil {
		t.Fatalf("no pod in %s: %v", ns, err)
	}
	return &pods.Items[0]
}

// BenchmarkAdmission50Concurrent creates 50 annotated pods at once through
// the real API server, webhook and Fly double, and reports the latency of
// each create (admission included) as percentiles: without and with the
// warm pool (FlyOrg spec.pool.size 50, refilled between bursts), with the
// double adding 0 and 150 ms to every Fly request.
func BenchmarkAdmission50Concurrent(b *testing.B) {
	e := startEnv(b, 10*time.Second)
	for _, pooled := range []bool{false, true} {
		for _, latency := range []time.Duration{0, 150 * time.Millisecond} {
			name := fmt.Sprintf("pool=%v/fly=%dms", map[bool]string{false: "off", true: "on"}[pooled], latency.Milliseconds())
			b.Run(name, func(b *testing.B) { benchmarkAdmissionBurst(b, e, pooled, latency) })
		}
	}
}

func benchmarkAdmissionBurst(b *testing.B, e *env, pooled bool, latency time.Duration) {
	const pods = 50
	ctx := context.Background()
	size := int32(0)
	if pooled {
		size = pods
	}
	var org glaceonv1alpha1.FlyOrg
	if err := e.c.Get(ctx, client.ObjectKey{Name: managertest.DefaultFlyOrg}, &org); err != nil {
		b.Fatal(err)
	}
	orig := org.DeepCopy()
	org.Spec.Pool = &glaceonv1alpha1.FlyOrgPool{Size: size}
	if err := e.c.Patch(ctx, &org, client.MergeFrom(orig)); err != nil {
		b.Fatal(err)
	}
	// Between bursts: the pool full (or gone), and no Fly latency for the
	// refill, which is not what is measured.
	settle := func() {
		e.fly.Faults().Clear()
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			var fo glaceonv1alpha1.FlyOrg
			if err := e.c.Get(ctx, client.ObjectKey{Name: managertest.DefaultFlyOrg}, &fo); err != nil {
				return false, err
			}
			if !pooled {
				return fo.Status.Pool == nil, nil
			}
			// Counted, not read from the status: that may still show the
			// pool before the last burst.
			var fps glaceonv1alpha1.FlyPeerList
			if err := e.c.List(ctx, &fps, client.HasLabels{glaceonv1alpha1.LabelPool}); err != nil {
				return false, err
			}
			ready := int32(0)
			for _, fp := range fps.Items {
				if fp.Spec.Pod.Namespace == "" && fp.Status.Phase == glaceonv1alpha1.FlyPeerAvailable && fp.DeletionTimestamp.IsZero() {
					ready++
				}
			}
			return ready == size, nil
		})
		if err != nil {
			b.Fatalf("pool not settled: %v", err)
		}
		if latency > 0 {
			e.fly.Faults().Set(flyapitest.Fault{Kind: flyapitest.FaultSlow, Delay: latency})
		}
	}
	defer e.fly.Faults().Clear()
	var latencies []time.Duration
	var cpu time.Duration
	e.mu.Lock()
	e.handling, e.steps = nil, nil
	e.mu.Unlock()
	retriesBefore := claimResults(b, pool.ResultConflictRetry)
	fallbacksBefore := claimResults(b, pool.ResultFallback)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		settle()
		burst := benchBursts.Add(1)
		ns := e.namespace(b, fmt.Sprintf("bench-%d", burst))
		b.StartTimer()
		cpuBefore := processCPU()
		results := make(chan time.Duration, pods)
		errs := make(chan error, pods)
		for j := 0; j < pods; j++ {
			go func() {
				start := time.Now()
				// Unique names: the steps are recorded by pod name.
				err := e.c.Create(ctx, managertest.Pod(ns, fmt.Sprintf("p-%d-%d", burst, j), map[string]string{inject.AnnotationTarget: "twi-ollama"}))
				results <- time.Since(start)
				errs <- err
			}()
		}
		for j := 0; j < pods; j++ {
			latencies = append(latencies, <-results)
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		cpu += processCPU() - cpuBefore
	}
	b.StopTimer()
	pct := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000
	}
	// create-*: what a client sees (API server + webhook); webhook-*: the
	// time spent in our handler, Fly call and Secret included.
	b.ReportMetric(pct(latencies, 0.50), "create-p50-ms")
	b.ReportMetric(pct(latencies, 0.99), "create-p99-ms")
	// CPU of this process (manager, webhook, Fly double, test client) per
	// pod; the rest of an admission is waiting, mostly on the API server.
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(len(latencies)), "proc-cpu-ms/pod")
	if pooled {
		// Claims that lost a compare-and-swap and tried again, and pods
		// that found the pool empty, per pod.
		b.ReportMetric((claimResults(b, pool.ResultConflictRetry)-retriesBefore)/float64(len(latencies)), "cas-retries/pod")
		b.ReportMetric((claimResults(b, pool.ResultFallback)-fallbacksBefore)/float64(len(latencies)), "fallbacks/pod")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	b.ReportMetric(pct(e.handling, 0.50), "webhook-p50-ms")
	b.ReportMetric(pct(e.handling, 0.99), "webhook-p99-ms")
	// The cost of each step of one admission, from the test hook. Without
	// the pool: the FlyPeer written before the Fly call, the Fly call, the
	// Secret, the FlyPeer's status. With it: the Secret after the claim.
	between := func(from, to string) []time.Duration {
		var d []time.Duration
		for _, st := range e.steps {
			if a, ok := st[from]; ok {
				if z, ok := st[to]; ok {
					d = append(d, z.Sub(a))
				}
			}
		}
		return d
	}
	for _, m := range []struct{ name, from, to string }{
		{"flypeer-create", glaceonadmission.StepBeforeFlyPeer, glaceonadmission.StepAfterFlyPeer},
		{"fly-add", glaceonadmission.StepAfterFlyPeer, glaceonadmission.StepAfterFly},
		{"secret-create", glaceonadmission.StepAfterFly, glaceonadmission.StepAfterSecret},
		{"claim", glaceonadmission.StepBeforeClaim, glaceonadmission.StepAfterClaim},
		{"pooled-secret-create", glaceonadmission.StepAfterClaim, glaceonadmission.StepAfterSecret},
		{"flypeer-status", glaceonadmission.StepAfterSecret, glaceonadmission.StepBeforeResponse},
	} {
		if d := between(m.from, m.to); len(d) > 0 {
			b.ReportMetric(pct(d, 0.50), m.name+"-p50-ms")
		}
	}
}

// claimResults sums glaceon_pool_claims_total{result} over FlyOrgs.
func claimResults(b *testing.B, result string) float64 {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var n float64
	for _, f := range families {
		if f.GetName() != pool.MetricClaims {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// benchBursts numbers the benchmark's bursts, one namespace each (the
// framework runs a sub-benchmark more than once).
var benchBursts atomic.Int64

// processCPU is the user and system CPU time this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

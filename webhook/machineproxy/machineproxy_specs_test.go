package machineproxy

import (
	"bytes"
	"flag"
	appsv1 "k8s.io/api/apps/v1"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/glaceon/glaceon/hack/testkit/podsecurity"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the current output")

// testOptions are the controller options of the unit tests: the shipped
// injection defaults with a fixed image and a default org.
func testOptions() Options {
	cfg := inject.DefaultConfig()
	cfg.Image = "registry.example/glaceon-sidecar:v0.0.0-test"
	cfg.DefaultOrg = "acme"
	o := Options{Inject: cfg}
	o.setDefaults()
	return o
}

func TestProxyTargets(t *testing.T) {
	type served struct {
		target      string
		servicePort int32
		listenPort  int32
	}
	tests := map[string]struct {
		mp      *glaceonv1alpha1.MachineProxy
		want    []served
		wantErr string
	}{
		"url, service port from spec": {
			mp:   newMachineProxy(withTarget("http://twi-ollama.flycast"), withPort(8000)),
			want: []served{{"twi-ollama.flycast:80", 8000, 8080}},
		},
		"single target defaults to its own port": {
			mp:   newMachineProxy(withTarget("db.internal:5432")),
			want: []served{{"db.internal:5432", 5432, 8080}},
		},
		"several targets, each on its own port": {
			mp: newMachineProxy(withTarget("twi-ollama, db.internal:5432,iad.api.internal:8080")),
			want: []served{
				{"twi-ollama.flycast:80", 80, 8080},
				{"db.internal:5432", 5432, 8081},
				{"iad.api.internal:8080", 8080, 8082},
			},
		},
		"two targets on one port": {
			mp:      newMachineProxy(withTarget("a.flycast,b.flycast")),
			wantErr: "a.flycast:80 and b.flycast:80 would both be served on Service port 80",
		},
		"the same target twice": {
			mp:      newMachineProxy(withTarget("twi-ollama,twi-ollama.flycast:80")),
			wantErr: "list each target once",
		},
		"port with several targets": {
			mp:      newMachineProxy(withTarget("a.flycast,b.flycast:81"), withPort(80)),
			wantErr: "spec.port: Forbidden",
		},
		"grammar errors name the field": {
			mp:      newMachineProxy(withTarget("example.com:80")),
			wantErr: "spec.target: Invalid value",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, errs := proxyTargets(tc.mp)
			if tc.wantErr != "" {
				if len(errs) == 0 || !strings.Contains(errs.ToAggregate().Error(), tc.wantErr) {
					t.Fatalf("errs = %v, want one containing %q", errs, tc.wantErr)
				}
				return
			}
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			var gotServed []served
			for _, pt := range got {
				gotServed = append(gotServed, served{pt.target.String(), pt.servicePort, pt.listenPort})
			}
			if !reflect.DeepEqual(gotServed, tc.want) {
				t.Errorf("got %+v\nwant %+v", gotServed, tc.want)
			}
		})
	}
}

func TestEmptyOrgLeavesItToTheDefaultFlyOrg(t *testing.T) {
	if _, errs := validate(newMachineProxy(), testOptions()); len(errs) > 0 {
		t.Errorf("no spec.org: %v", errs)
	}
	d := desiredDeployment(t, newMachineProxy())
	if org, ok := d.Spec.Template.Annotations[inject.AnnotationOrg]; ok {
		t.Errorf("pod template names org %q; want no annotation, so the webhook uses the default FlyOrg", org)
	}
	d = desiredDeployment(t, newMachineProxy(withOrg("acme")))
	if org := d.Spec.Template.Annotations[inject.AnnotationOrg]; org != "acme" {
		t.Errorf("pod template org = %q, want acme (spec.org)", org)
	}
}

func TestValidateRefusesNamespacesTheWebhookSkips(t *testing.T) {
	opts := testOptions()
	opts.ExcludedNamespaces = []string{"kube-system", "glaceon-system"}
	mp := newMachineProxy()
	mp.Namespace = "glaceon-system"
	_, errs := validate(mp, opts)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "metadata.namespace: Forbidden: glaceon's webhook does not serve namespace glaceon-system") {
		t.Errorf("errs = %v, want a metadata.namespace Forbidden", errs)
	}
	mp.Namespace = "flycast"
	if _, errs := validate(mp, opts); len(errs) > 0 {
		t.Errorf("flycast: %v", errs)
	}
}

func TestDeploymentFor(t *testing.T) {
	custom := corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}
	tolerations := []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "proxies", Effect: corev1.TaintEffectNoSchedule}}
	tests := map[string]struct {
		mp              *glaceonv1alpha1.MachineProxy
		wantReplicas    int32
		wantAnnotations map[string]string
		wantArgs        []string
		check           func(t *testing.T, pod corev1.PodSpec)
	}{
		"defaults: the default FlyOrg, no region, two replicas": {
			mp:           newMachineProxy(),
			wantReplicas: 2,
			wantAnnotations: map[string]string{
				inject.AnnotationTarget:     "twi-ollama.flycast:80",
				inject.AnnotationInjectMode: InjectModePeerOnly,
			},
			wantArgs: []string{"--wg-config", "/etc/glaceon/fly0.conf",
				"--forward", "[::]:8080=twi-ollama.flycast:80",
				"--health-addr", "[::]:9901"},
			check: func(t *testing.T, pod corev1.PodSpec) {
				if got := pod.Containers[0].Resources; !reflect.DeepEqual(got, inject.DefaultConfig().Resources) {
					t.Errorf("resources = %+v, want the sidecar defaults", got)
				}
			},
		},
		"spec org, region, replicas, resources, placement": {
			mp: newMachineProxy(withOrg("personal"), withRegion("yyz"), withReplicas(5), withTarget("db.internal:5432,echo.flycast:7"),
				func(mp *glaceonv1alpha1.MachineProxy) {
					mp.Spec.Resources = &custom
					mp.Spec.NodeSelector = map[string]string{"pool": "edge"}
					mp.Spec.Tolerations = tolerations
				}),
			wantReplicas: 5,
			wantAnnotations: map[string]string{
				inject.AnnotationTarget:     "db.internal:5432,echo.flycast:7",
				inject.AnnotationOrg:        "personal",
				inject.AnnotationRegion:     "yyz",
				inject.AnnotationInjectMode: InjectModePeerOnly,
			},
			wantArgs: []string{"--wg-config", "/etc/glaceon/fly0.conf",
				"--forward", "[::]:8080=db.internal:5432",
				"--forward", "[::]:8081=echo.flycast:7",
				"--health-addr", "[::]:9901"},
			check: func(t *testing.T, pod corev1.PodSpec) {
				if got := pod.Containers[0].Resources; !reflect.DeepEqual(got, custom) {
					t.Errorf("resources = %+v, want the spec's", got)
				}
				if pod.NodeSelector["pool"] != "edge" || !reflect.DeepEqual(pod.Tolerations, tolerations) {
					t.Errorf("placement not passed on: %v %v", pod.NodeSelector, pod.Tolerations)
				}
				var names []string
				for _, p := range pod.Containers[0].Ports {
					names = append(names, p.Name)
				}
				if want := []string{"target-0", "target-1", inject.HealthPortName}; !reflect.DeepEqual(names, want) {
					t.Errorf("container ports = %v, want %v", names, want)
				}
			},
		},
		"transport websocket": {
			mp:           newMachineProxy(withTransport("websocket")),
			wantReplicas: 2,
			wantAnnotations: map[string]string{
				inject.AnnotationTarget:     "twi-ollama.flycast:80",
				inject.AnnotationInjectMode: InjectModePeerOnly,
			},
			wantArgs: []string{"--wg-config", "/etc/glaceon/fly0.conf",
				"--forward", "[::]:8080=twi-ollama.flycast:80",
				"--health-addr", "[::]:9901", "--transport", "websocket"},
		},
		"scaled to zero": {
			mp:           newMachineProxy(withReplicas(0)),
			wantReplicas: 0,
			wantAnnotations: map[string]string{
				inject.AnnotationTarget:     "twi-ollama.flycast:80",
				inject.AnnotationInjectMode: InjectModePeerOnly,
			},
			wantArgs: []string{"--wg-config", "/etc/glaceon/fly0.conf",
				"--forward", "[::]:8080=twi-ollama.flycast:80",
				"--health-addr", "[::]:9901"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			targets, errs := proxyTargets(tc.mp)
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			d := deploymentFor(tc.mp, targets, testOptions())
			if got := ptr.Deref(d.Spec.Replicas, -1); got != tc.wantReplicas {
				t.Errorf("replicas = %d, want %d", got, tc.wantReplicas)
			}
			if got := d.Spec.Template.Annotations; !reflect.DeepEqual(got, tc.wantAnnotations) {
				t.Errorf("pod annotations = %v\nwant %v", got, tc.wantAnnotations)
			}
			pod := d.Spec.Template.Spec
			if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
				t.Fatalf("want exactly one container, got %+v", pod.Containers)
			}
			if got := pod.Containers[0].Args; !reflect.DeepEqual(got, tc.wantArgs) {
				t.Errorf("args = %q\nwant %q", got, tc.wantArgs)
			}
			// The webhook's peer-only mode binds this volume.
			if got := localPeerSecret(pod); got != inject.PlaceholderSecretName {
				t.Errorf("peer volume secret = %q, want the placeholder", got)
			}
			assertOwnedBy(t, d.ObjectMeta, tc.mp)
			if !reflect.DeepEqual(d.Spec.Selector.MatchLabels, selectorLabels(tc.mp)) {
				t.Errorf("selector = %v", d.Spec.Selector.MatchLabels)
			}
			for k, v := range d.Spec.Selector.MatchLabels {
				if d.Spec.Template.Labels[k] != v {
					t.Errorf("pod labels %v do not match the selector", d.Spec.Template.Labels)
				}
			}
			if failures := restrictedFailures(t, &d.Spec.Template); len(failures) > 0 {
				t.Errorf("proxy pod fails Pod Security restricted: %q", failures)
			}
			if tc.check != nil {
				tc.check(t, pod)
			}
		})
	}
}

func TestServiceAndPDB(t *testing.T) {
	mp := newMachineProxy(withTarget("twi-ollama,db.internal:5432"), withReplicas(3))
	targets, errs := proxyTargets(mp)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	svc := serviceFor(mp, targets)
	assertOwnedBy(t, svc.ObjectMeta, mp)
	if svc.Name != mp.Name || svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("service %s type %s", svc.Name, svc.Spec.Type)
	}
	if !reflect.DeepEqual(svc.Spec.Selector, selectorLabels(mp)) {
		t.Errorf("service selector = %v", svc.Spec.Selector)
	}
	var got []string
	for _, p := range svc.Spec.Ports {
		got = append(got, p.Name+":"+p.TargetPort.String()+":"+string(p.Protocol)+":"+strconv.Itoa(int(p.Port)))
	}
	if want := []string{"target-0:target-0:TCP:80", "target-1:target-1:TCP:5432"}; !reflect.DeepEqual(got, want) {
		t.Errorf("service ports = %v, want %v", got, want)
	}

	for replicas, want := range map[int32]bool{0: false, 1: false, 2: true, 3: true} {
		if got := wantsPDB(newMachineProxy(withReplicas(replicas))); got != want {
			t.Errorf("wantsPDB at %d replicas = %v, want %v", replicas, got, want)
		}
	}
	pdb := pdbFor(mp)
	assertOwnedBy(t, pdb.ObjectMeta, mp)
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || !reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, selectorLabels(mp)) {
		t.Errorf("pdb spec = %+v", pdb.Spec)
	}
}

// TestGolden pins the children of the earlier operator's example, so that
// a review sees every change to what lands in users' clusters
// (`go test ./webhook/machineproxy -run TestGolden -update` rewrites it).
func TestGolden(t *testing.T) {
	mp := newMachineProxy(withName("twi-ollama"), withOrg("personal"), withRegion("yyz"), withTarget("http://twi-ollama.flycast"), withPort(80), withReplicas(2))
	targets, errs := proxyTargets(mp)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var buf bytes.Buffer
	for _, obj := range []client.Object{deploymentFor(mp, targets, testOptions()), serviceFor(mp, targets), pdbFor(mp)} {
		u, err := toApplyObject(obj)
		if err != nil {
			t.Fatal(err)
		}
		out, err := yaml.Marshal(u.Object)
		if err != nil {
			t.Fatal(err)
		}
		buf.WriteString("---\n")
		buf.Write(out)
	}
	path := filepath.Join("testdata", "twi-ollama.golden.yaml")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(want, buf.Bytes()) {
		t.Errorf("%s is out of date (run with -update if the change is intended); got:\n%s", path, buf.String())
	}
}

func assertOwnedBy(t *testing.T, m metav1.ObjectMeta, mp *glaceonv1alpha1.MachineProxy) {
	t.Helper()
	if m.Name != mp.Name || m.Namespace != mp.Namespace {
		t.Errorf("child %s/%s, want %s/%s", m.Namespace, m.Name, mp.Namespace, mp.Name)
	}
	if len(m.OwnerReferences) != 1 || m.OwnerReferences[0].UID != mp.UID || !ptr.Deref(m.OwnerReferences[0].Controller, false) ||
		m.OwnerReferences[0].Kind != "MachineProxy" || m.OwnerReferences[0].APIVersion != "glaceon.fly/v1alpha1" {
		t.Errorf("owner references = %+v", m.OwnerReferences)
	}
	for k, v := range childLabels(mp) {
		if m.Labels[k] != v {
			t.Errorf("labels = %v, want %s=%s (the controller's cache selects on them)", m.Labels, k, v)
		}
	}
}

// restrictedFailures evaluates the pod template against Pod Security
// "restricted".
func restrictedFailures(t *testing.T, tmpl *corev1.PodTemplateSpec) []string {
	t.Helper()
	return podsecurity.RestrictedFailures(t, &tmpl.ObjectMeta, &tmpl.Spec)
}

func localPeerSecret(pod corev1.PodSpec) string {
	for _, v := range pod.Volumes {
		if v.Name == inject.PeerVolumeName && v.Secret != nil {
			return v.Secret.SecretName
		}
	}
	return ""
}

func desiredDeployment(t *testing.T, mp *glaceonv1alpha1.MachineProxy) *appsv1.Deployment {
	t.Helper()
	targets, errs := validate(mp, testOptions())
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return deploymentFor(mp, targets, testOptions())
}

package machineproxy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/flyapi/target/targettest"
	"github.com/glaceon/glaceon/hack/controlplane"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
)

// TestSchemaValidation creates MachineProxies against a real kube-apiserver
// with the generated CRD: the OpenAPI schema and CEL rules must refuse
// every bad spec with the message written in the types, and accept the good
// ones. Every target case is also checked against inject.ParseTargets, so
// the CRD's CEL and the annotation grammar cannot drift apart unnoticed.
func TestSchemaValidation(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a control plane")
	}
	t.Parallel() // its own control plane; TestMachineProxy has another
	cp := controlplane.StartForTest(t, controlplane.Options{
		CRDDirectoryPaths:   []string{crdDir(), filepath.Join("testdata", "legacy-crd")},
		NoControllerManager: true,
	})
	c := newClient(t, cp)
	t.Run("legacy migration command", func(t *testing.T) { testLegacyMigration(t, cp, c) })
	t.Run("target grammar table", func(t *testing.T) { testTargetTable(t, c) })
	ctx := context.Background()

	tests := map[string]struct {
		mp *glaceonv1alpha1.MachineProxy
		// want is a substring of the refusal; "" means the spec is valid.
		want string
		// crdOnly marks refusals for a MachineProxy-only reason, which the
		// annotation grammar has no reason to share.
		crdOnly bool
	}{
		"legacy spec":               {mp: newMachineProxy(withOrg("personal"), withRegion("yyz"), withTarget("http://twi-ollama.flycast"), withPort(80))},
		"bare app":                  {mp: newMachineProxy(withTarget("twi-ollama"))},
		"flycast host without port": {mp: newMachineProxy(withTarget("twi-ollama.flycast"))},
		"internal with port":        {mp: newMachineProxy(withTarget("db.internal:5432"))},
		"several targets":           {mp: newMachineProxy(withTarget("db.internal:5432, http://twi-ollama.flycast ,iad.api.internal:8080"))},
		"upper case host":           {mp: newMachineProxy(withTarget("HTTP://Twi-Ollama.flycast/"))},
		"replicas zero":             {mp: newMachineProxy(withReplicas(0))},
		"https":                     {mp: newMachineProxy(withTarget("https://twi-ollama.flycast")), want: "https:// is not supported"},
		"not a fly host":            {mp: newMachineProxy(withTarget("example.com:80")), want: "must be Fly private hosts ending in .flycast or .internal"},
		"http bare app":             {mp: newMachineProxy(withTarget("http://twi-ollama")), want: "must be Fly private hosts"},
		"internal without port":     {mp: newMachineProxy(withTarget("db.internal")), want: "a .internal host needs a port"},
		"path":                      {mp: newMachineProxy(withTarget("http://twi-ollama.flycast/api")), want: "no path"},
		"empty entry":               {mp: newMachineProxy(withTarget("twi-ollama,,db.internal:5432")), want: "no empty entry"},
		"space in entry":            {mp: newMachineProxy(withTarget("twi ollama")), want: "each comma-separated target must be"},
		"port too big":              {mp: newMachineProxy(withTarget("db.internal:70000")), want: "target ports must be numbers from 1 to 65535"},
		"port zero":                 {mp: newMachineProxy(withTarget("db.internal:0")), want: "target ports must be numbers from 1 to 65535"},
		"too many targets":          {mp: newMachineProxy(withTarget(manyTargets(17))), want: "at most 16 targets"},
		"service port out of range": {mp: newMachineProxy(withPort(65536)), want: "port must be a number from 1 to 65535"},
		"service port with targets": {mp: newMachineProxy(withTarget("db.internal:5432,db.internal:8080"), withPort(80)), want: "with several targets each is served on its own port", crdOnly: true},
		"negative replicas":         {mp: newMachineProxy(withReplicas(-1)), want: "replicas must be 0 or more"},
		"too many replicas":         {mp: newMachineProxy(withReplicas(101)), want: "replicas must be at most 100"},
		"bad org":                   {mp: newMachineProxy(withOrg("Acme Corp")), want: "org must name a FlyOrg"},
		"bad region":                {mp: newMachineProxy(withRegion("iad1")), want: "region must be a Fly region code"},
		"name not a DNS-1035 label": {mp: newMachineProxy(withName("1proxy")), want: "it names the proxy's Service"},
		"missing target":            {mp: newMachineProxy(withTarget("")), want: "spec.target"},
		"bad transport":             {mp: newMachineProxy(withTransport("tcp")), want: `spec.transport: Unsupported value: "tcp"`},
		"transport websocket":       {mp: newMachineProxy(withTransport("websocket"))},
	}
	i := 0
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mp := tc.mp.DeepCopy()
			mp.Namespace = "default"
			if mp.Name == "proxy" {
				i++
				mp.Name = fmt.Sprintf("proxy-%d", i)
			}
			err := c.Create(ctx, mp)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused a valid spec: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted; want a refusal containing %q", tc.want)
			case tc.want != "" && !apierrors.IsInvalid(err):
				t.Fatalf("err = %v, want an Invalid error", err)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("err = %v\nwant it to contain %q", err, tc.want)
			}
			if err != nil {
				t.Logf("refused as wanted: %v", err)
			}
			if tc.crdOnly || mp.Spec.Target == defaultTarget {
				return
			}
			// The annotation grammar must agree on every target case.
			_, errs := inject.ParseTargets(mp.Spec.Target, nil)
			if tc.want == "" && len(errs) > 0 {
				t.Errorf("CRD accepts %q but inject.ParseTargets refuses it: %v", mp.Spec.Target, errs)
			}
			if tc.want != "" && len(errs) == 0 {
				t.Errorf("CRD refuses %q but inject.ParseTargets accepts it", mp.Spec.Target)
			}
		})
	}
}

// testTargetTable runs the target grammar's table (targettest) through the
// CRD's CEL rules: CEL must refuse every list the grammar refuses, except
// the cases marked celAccepts (CEL cannot express them; the controller's
// parser refuses them), and accept every list the grammar accepts.
func testTargetTable(t *testing.T, c client.Client) {
	ctx := context.Background()
	for i, tc := range targettest.Cases() {
		t.Run(tc.Name, func(t *testing.T) {
			mp := newMachineProxy(withName(fmt.Sprintf("grammar-%d", i)), withTarget(tc.Value))
			mp.Namespace = "default"
			err := c.Create(ctx, mp)
			if err == nil {
				_ = c.Delete(ctx, mp)
			}
			refused := len(tc.Problems) > 0
			switch {
			case err != nil && !apierrors.IsInvalid(err):
				t.Fatalf("create: %v", err)
			case !refused && err != nil:
				t.Fatalf("the grammar accepts %q but the CRD refuses it: %v", tc.Value, err)
			case refused && !tc.CELAccepts && err == nil:
				t.Fatalf("the grammar refuses %q (%s) but the CRD accepts it", tc.Value, tc.Problems[0].Detail)
			case tc.CELAccepts && err != nil:
				t.Fatalf("%q is marked celAccepts but the CRD refuses it (remove the mark): %v", tc.Value, err)
			}
		})
	}
}

// testLegacyMigration runs the migration command of deploy/crd/README.md,
// as written there, with the control plane's kubectl.
func testLegacyMigration(t *testing.T, cp *controlplane.ControlPlane, c client.Client) {
	ctx := context.Background()
	readme, err := os.ReadFile(filepath.Join(crdDir(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- migrate:begin")
	_, block, ok2 := strings.Cut(block, "```sh\n")
	command, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("no migrate:begin ```sh block in deploy/crd/README.md")
	}

	legacy := []map[string]any{
		{"name": "twi-ollama", "namespace": "default", "spec": map[string]any{"region": "yyz", "target": "http://twi-ollama.flycast"}},
		{"name": "db", "namespace": "kube-public", "spec": map[string]any{"org": "acme", "region": "iad", "target": "db.internal:5432", "port": 5432}},
	}
	for _, l := range legacy {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "glaceon.friendshipcastle.zip/v1alpha1", "kind": "MachineProxy",
			"metadata": map[string]any{"name": l["name"], "namespace": l["namespace"]},
			"spec":     l["spec"],
		}}
		if err := c.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
	}

	cmd := exec.Command("bash", "-euo", "pipefail", "-c", command)
	cmd.Env = append(os.Environ(), "PATH="+cp.AssetsDir+":"+os.Getenv("PATH"), "KUBECONFIG="+cp.KubeconfigPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("migration command failed: %v\n%s", err, out)
	}

	want := map[string]glaceonv1alpha1.MachineProxySpec{
		"default/twi-ollama": {Org: "personal", Region: "yyz", Target: "http://twi-ollama.flycast", Port: ptr.To[int32](80), Replicas: ptr.To[int32](2)},
		"kube-public/db":     {Org: "acme", Region: "iad", Target: "db.internal:5432", Port: ptr.To[int32](5432), Replicas: ptr.To[int32](2)},
	}
	for key, spec := range want {
		ns, name, _ := strings.Cut(key, "/")
		mp := &glaceonv1alpha1.MachineProxy{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, mp); err != nil {
			t.Fatalf("migrated %s: %v", key, err)
		}
		if !reflect.DeepEqual(mp.Spec, spec) {
			t.Errorf("migrated %s spec = %+v, want %+v", key, mp.Spec, spec)
		}
		if err := c.Delete(ctx, mp); err != nil {
			t.Fatal(err)
		}
	}
	old := &unstructured.UnstructuredList{}
	old.SetAPIVersion("glaceon.friendshipcastle.zip/v1alpha1")
	old.SetKind("MachineProxyList")
	if err := c.List(ctx, old); err != nil || len(old.Items) != 0 {
		t.Errorf("old MachineProxies left: %d (%v)", len(old.Items), err)
	}
}

func manyTargets(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("db.internal:%d", 5000+i)
	}
	return strings.Join(parts, ",")
}

func newClient(t *testing.T, cp *controlplane.ControlPlane) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := glaceonv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/glaceon/glaceon/deploy/manifests"
	"github.com/glaceon/glaceon/hack/controlplane"
)

// helm returns the pinned helm that hack/tool.sh builds (once, cached).
func helm(t *testing.T) string {
	t.Helper()
	h, err := manifests.Tool("..", "helm")
	if err != nil {
		t.Fatalf("build helm: %v", err)
	}
	return h
}

func runTool(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, errOut.String(), out.String())
	}
	return out.String()
}

// deployObjects renders deploy/ and returns its objects and its namespace.
func deployObjects(t *testing.T, kubectl string) ([]manifests.Object, string) {
	t.Helper()
	stream, err := manifests.Kustomize(kubectl, ".")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := manifests.Decode(stream)
	if err != nil {
		t.Fatal(err)
	}
	var namespaces []string
	for _, o := range objs {
		if manifests.Kind(o) == "Namespace" {
			namespaces = append(namespaces, o["metadata"].(map[string]any)["name"].(string))
		}
	}
	if len(namespaces) != 1 {
		t.Fatalf("deploy/ renders namespaces %v, want exactly one (glaceon's own)", namespaces)
	}
	return objs, namespaces[0]
}

func chartObjects(t *testing.T, h, namespace string, extra ...string) []manifests.Object {
	t.Helper()
	stream, err := manifests.HelmTemplate(h, "chart", namespace, extra...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := manifests.Decode(stream)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// kubectlPath is the kubectl hack/control-plane.sh built.
func kubectlPath(t *testing.T) string {
	t.Helper()
	dir, err := controlplane.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "kubectl")
}

// The chart's templates are written by hand next to deploy/: this is what
// keeps them the same install. It derives everything from deploy/ at test
// time, so a change there (new objects, RBAC, flags) fails here until the
// chart follows.
func TestChartDefaultsRenderDeploy(t *testing.T) {
	h, kubectl := helm(t), kubectlPath(t)
	want, ns := deployObjects(t, kubectl)
	got := chartObjects(t, h, ns)
	if d := manifests.DiffChart(want, got); d != "" {
		t.Errorf("helm template chart (default values) differs from kubectl kustomize deploy/:\n%s", d)
	}
	// The comparison can fail: a changed value shows up.
	changed := chartObjects(t, h, ns, "--set", "replicas=3")
	if d := manifests.DiffChart(want, changed); !strings.Contains(d, "Deployment "+ns+"/glaceon-manager differs") {
		t.Errorf("replicas=3 went unnoticed by the comparison: %q", d)
	}
}

// Helm installs crds/ as they are: they must be deploy/crd's files.
func TestChartCRDsAreDeploys(t *testing.T) {
	crds, err := filepath.Glob("crd/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range crds {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		want = append(want, filepath.Base(f))
		a, _ := os.ReadFile(f)
		b, err := os.ReadFile(filepath.Join("chart", "crds", filepath.Base(f)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("chart/crds/%s is not a copy of deploy/%s: run `make manifests`", filepath.Base(f), f)
		}
	}
	got, _ := filepath.Glob("chart/crds/*")
	if len(got) != len(want) {
		t.Errorf("chart/crds holds %v, deploy/crd %v: run `make manifests`", got, want)
	}
}

func TestChartLint(t *testing.T) {
	h := helm(t)
	out := runTool(t, nil, h, "lint", "--strict", "chart", "--namespace", "glaceon-system")
	if !strings.Contains(out, "0 chart(s) failed") {
		t.Errorf("helm lint: %s", out)
	}
	// Values outside the schema are refused with the field named.
	for _, bad := range []struct{ set, names string }{
		{"webhook.failurePolicy=Sometimes", "failurePolicy"},
		{"sidecar.mode=sometimes", "mode"},
		{"sidecar.transport=tcp", "transport"},
		{"replicas=0", "replicas"},
		{"image.digest=latest", "digest"},
		{"sidecar.resources.requests.gpu=1", "gpu"},
		{"flyOrgs[0].default=true", "name"},
	} {
		out, err := exec.Command(h, "template", "glaceon", "chart", "--set", bad.set).CombinedOutput()
		if err == nil {
			t.Errorf("helm template --set %s: accepted", bad.set)
		} else if !strings.Contains(string(out), bad.names) {
			t.Errorf("helm template --set %s: the error does not name %q: %s", bad.set, bad.names, out)
		}
	}
}

// The chart's output, with default and with changed values, is accepted by
// a real API server (server-side apply validates every field, the CRD
// schema and the webhook's CEL match condition).
func TestChartApplies(t *testing.T) {
	h := helm(t)
	cp := controlplane.StartForTest(t, controlplane.Options{NoControllerManager: true})
	kubectl := func(stdin []byte, args ...string) string {
		t.Helper()
		return runTool(t, stdin, filepath.Join(cp.AssetsDir, "kubectl"), append([]string{"--kubeconfig", cp.KubeconfigPath}, args...)...)
	}
	_, ns := deployObjects(t, filepath.Join(cp.AssetsDir, "kubectl"))
	// What the README's Helm install does before `helm install`.
	kubectl(nil, "create", "namespace", ns)
	kubectl(nil, "-n", ns, "create", "secret", "generic", "fly-api-token", "--from-literal=token=FlyV1 fm2_test")

	defaults := runTool(t, nil, h, "template", "glaceon", "chart", "--namespace", ns, "--include-crds")
	kubectl([]byte(defaults), "apply", "--server-side", "--field-manager=helm-test", "-f", "-")
	kubectl(nil, "get", "-n", ns, "deployment/glaceon-manager", "service/glaceon-webhook", "pdb/glaceon-manager")

	// Every knob turned: still valid, and the flags reach the manager.
	changed := runTool(t, nil, h, "template", "glaceon", "chart", "--namespace", ns, "--include-crds",
		"--set", "replicas=3,image.digest=sha256:"+strings.Repeat("a", 64),
		"--set", "sidecar.image.repository=registry.example/glaceon-sidecar,sidecar.image.tag=v9,sidecar.mode=classic,sidecar.transport=websocket",
		"--set", "sidecar.resources.requests.cpu=20m,sidecar.resources.limits.memory=64Mi,sidecar.image.pullPolicy=Always",
		"--set", "webhook.failurePolicy=Ignore,webhook.timeoutSeconds=20,webhook.flyTimeout=12s",
		"--set", "defaultRegion=yyz,peerPrefix=k8s-prod-,podDisruptionBudget.minAvailable=2",
		"--set", "nodeSelector.kubernetes\\.io/os=linux,priorityClassName=system-cluster-critical",
	)
	for _, want := range []string{
		"image: ghcr.io/glaceon/glaceon@sha256:aaaa",
		"- --sidecar-image=registry.example/glaceon-sidecar:v9",
		"- --sidecar-mode=classic",
		"- --sidecar-transport=websocket",
		"- --sidecar-requests=cpu=20m",
		"- --sidecar-limits=memory=64Mi",
		"- --sidecar-image-pull-policy=Always",
		"- --fly-timeout=12s",
		"- --default-region=yyz",
		"- --peer-prefix=k8s-prod-",
		"failurePolicy: Ignore",
		"timeoutSeconds: 20",
	} {
		if !strings.Contains(changed, want) {
			t.Errorf("chart with changed values has no %q", want)
		}
	}
	kubectl([]byte(changed), "apply", "--server-side", "--force-conflicts", "--field-manager=helm-test", "-f", "-")

	// FlyOrg objects from values render and are accepted by the CRD.
	orgs := runTool(t, nil, h, "template", "glaceon", "chart", "--namespace", ns,
		"--set", "flyOrgs[0].name=personal,flyOrgs[0].default=true,flyOrgs[0].spec.tokenSecretRef.name=fly-api-token,flyOrgs[0].spec.tokenSecretRef.key=token,flyOrgs[0].spec.namespaces[0]=*",
		"--show-only", "templates/flyorgs.yaml")
	objs, err := manifests.Decode([]byte(orgs))
	if err != nil || len(objs) != 1 || manifests.Kind(objs[0]) != "FlyOrg" {
		t.Fatalf("flyOrgs rendered %d objects (%v): %s", len(objs), err, orgs)
	}
	if ann := objs[0]["metadata"].(map[string]any)["annotations"]; ann == nil || ann.(map[string]any)["glaceon.fly/default"] != "true" {
		t.Errorf("flyOrgs[0].default=true: no glaceon.fly/default annotation: %s", orgs)
	}
	kubectl([]byte(orgs), "apply", "--server-side", "--field-manager=helm-test", "-f", "-")
}

// Package deploy holds glaceon's install manifests (kubectl apply -k
// deploy/). This test renders them with the kubectl that hack/ builds and
// applies them server-side to a real API server, so a broken manifest
// fails CI.
package deploy

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/glaceon/glaceon/hack/controlplane"
)

func TestManifestsApply(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Options{NoControllerManager: true})
	kubectl := func(stdin []byte, args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(cp.AssetsDir, "kubectl"), append([]string{"--kubeconfig", cp.KubeconfigPath}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return out.String()
	}

	// The README's install commands, as a user types them (with a token
	// that is never used: no manager runs here).
	kubectl(nil, "create", "namespace", "glaceon-system")
	kubectl(nil, "-n", "glaceon-system", "create", "secret", "generic", "fly-api-token", "--from-literal=token=FlyV1 fm2_test")

	rendered := kubectl(nil, "kustomize", ".")
	for _, want := range []string{
		"kind: Namespace", "kind: CustomResourceDefinition", "kind: ClusterRole", "kind: Role",
		"kind: ServiceAccount", "kind: Deployment", "kind: Service", "kind: PodDisruptionBudget",
		"kind: MutatingWebhookConfiguration",
	} {
		if !strings.Contains(rendered, want) {
			t.Errorf("kubectl kustomize deploy/ has no %q", want)
		}
	}
	// The server validates every object, the CRD schema and the webhook's
	// CEL match condition included.
	kubectl([]byte(rendered), "apply", "--server-side", "--field-manager=glaceon-test", "-f", "-")
	got := kubectl(nil, "get", "-n", "glaceon-system", "deployment/glaceon-manager", "service/glaceon-webhook", "pdb/glaceon-manager", "serviceaccount/glaceon-manager", "-o", "name")
	if n := len(strings.Fields(got)); n != 4 {
		t.Errorf("after apply: %q", got)
	}
	// The webhook's Service carries the webhook alone; metrics have their
	// own Service (plain HTTP never shares a name with the webhook).
	if ports := kubectl(nil, "get", "-n", "glaceon-system", "service/glaceon-webhook", "-o", "jsonpath={.spec.ports[*].name}"); ports != "webhook" {
		t.Errorf("service/glaceon-webhook ports = %q, want webhook only", ports)
	}
	if ports := kubectl(nil, "get", "-n", "glaceon-system", "service/glaceon-metrics", "-o", "jsonpath={.spec.ports[*].name}"); ports != "metrics" {
		t.Errorf("service/glaceon-metrics ports = %q, want metrics only", ports)
	}
	kubectl(nil, "get", "mutatingwebhookconfiguration/glaceon", "crd/machineproxies.glaceon.fly", "crd/flyorgs.glaceon.fly", "crd/flypeers.glaceon.fly")
	if strings.Contains(rendered, "FLY_API_TOKEN") || strings.Contains(rendered, "kind: ConfigMap") {
		t.Errorf("the manager still takes a token from its environment or an org-policy ConfigMap")
	}
	// The README's FlyOrg step.
	kubectl(nil, "apply", "-f", "flyorg.example.yaml")
	if got := kubectl(nil, "get", "flyorgs", "-o", "name"); strings.TrimSpace(got) != "flyorg.glaceon.fly/personal" {
		t.Errorf("kubectl get flyorgs = %q", got)
	}
	// Applying again is a no-op, as for users re-running the install.
	kubectl([]byte(rendered), "apply", "--server-side", "--field-manager=glaceon-test", "-f", "-")
	// The README's own command (client-side) on top.
	kubectl(nil, "apply", "-k", ".")
}

package sidecar

import (
	"os/exec"
	"strings"
	"testing"
)

// The sidecar runs in every annotated pod: it must stay free of client-go,
// controller-runtime and the rest of Kubernetes, and of the Fly API client
// and its test double (it needs only the wg-quick format, the UDP bind and the WebSocket framing).
func TestSidecarHasNoKubernetesDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/glaceon/glaceon/cmd/glaceon-sidecar").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 10 {
		t.Fatalf("suspiciously short dependency list: %q", pkgs)
	}
	for _, p := range pkgs {
		if strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "sigs.k8s.io/") {
			t.Errorf("glaceon-sidecar depends on %s", p)
		}
		switch p {
		case "github.com/glaceon/glaceon/flyapi", "github.com/glaceon/glaceon/flyapi/flyapitest":
			t.Errorf("glaceon-sidecar depends on %s: import the leaf packages (flyapi/wgquick, flyapi/udpbind, flyapi/wgws) instead", p)
		}
	}
}

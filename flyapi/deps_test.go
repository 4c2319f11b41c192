package flyapi

import (
	"os/exec"
	"strings"
	"testing"
)

// flyapi is the bottom of the import graph: nothing in its tree may import
// the sidecar, the webhook, the commands or hack/, and its leaf packages
// import the standard library only (udpbind: plus wireguard-go and x/net,
// x/sys).
func TestFlyapiTreeImportsNothingAbove(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", "github.com/glaceon/glaceon/flyapi/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		p, _, _ := strings.Cut(line, " ")
		n++
		for _, above := range []string{"sidecar", "webhook", "cmd", "hack"} {
			if strings.HasPrefix(p, "github.com/glaceon/glaceon/"+above) {
				t.Errorf("the flyapi tree depends on %s", p)
			}
		}
	}
	if n < 10 {
		t.Fatalf("suspiciously short dependency list: %s", out)
	}
	for _, leaf := range []string{"wgquick", "version"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "github.com/glaceon/glaceon/flyapi/"+leaf).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		if got := strings.Fields(string(out)); len(got) != 1 || got[0] != "github.com/glaceon/glaceon/flyapi/"+leaf {
			t.Errorf("flyapi/%s must import the standard library only; its non-standard dependencies: %q", leaf, got)
		}
	}
}

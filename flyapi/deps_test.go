package flyapi

import (
	"os/exec"
	"strings"
	"testing"
)

// flyapi is the bottom of the import graph: nothing in its tree may import
// the sidecar, the webhook, the commands or hack/, and its leaf packages
// (target, wgquick, version) import the standard library and each other
// only.
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
	leaves := map[string]bool{}
	for _, leaf := range []string{"target", "wgquick", "version"} {
		leaves["github.com/glaceon/glaceon/flyapi/"+leaf] = true
	}
	for leaf := range leaves {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", leaf).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if !leaves[dep] {
				t.Errorf("%s must import the standard library and the other flyapi leaves only; it depends on %s", leaf, dep)
			}
		}
	}
}

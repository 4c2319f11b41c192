// Package testkit holds the fixtures glaceon's tests share that need no
// Kubernetes: the glaceon-sidecar binary built once per test binary run,
// and temp files. It imports the standard library only, so the sidecar's
// tests can use it.
//
// The test environment itself (control plane, manager, Fly double, the
// security mode with the shipped RBAC and a tenant) is
// webhook/manager/managertest; Pod Security checks are
// hack/testkit/podsecurity.
package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	mu       sync.Mutex
	running  bool   // Run is on the stack
	buildDir string // removed by Run
	binaries = map[string]*build{}
)

type build struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// Run runs the tests and then removes what they built. Call it from
// TestMain in every package that uses SidecarBinary:
//
//	func TestMain(m *testing.M) { os.Exit(testkit.Run(m)) }
func Run(m *testing.M) int {
	mu.Lock()
	running = true
	mu.Unlock()
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
		buildDir = ""
	}
	return code
}

// SidecarBinary builds cmd/glaceon-sidecar once per test binary run and
// returns its path.
func SidecarBinary(tb testing.TB) string {
	tb.Helper()
	return Binary(tb, "github.com/glaceon/glaceon/cmd/glaceon-sidecar")
}

// Binary builds the command pkg once per test binary run and returns its
// path. The package's TestMain must call Run, which removes it afterwards.
func Binary(tb testing.TB, pkg string) string {
	tb.Helper()
	mu.Lock()
	if !running {
		mu.Unlock()
		tb.Fatal("testkit.Binary: call os.Exit(testkit.Run(m)) from TestMain, so the binary is removed after the tests")
	}
	if buildDir == "" {
		dir, err := os.MkdirTemp("", "glaceon-test-bin-")
		if err != nil {
			mu.Unlock()
			tb.Fatal(err)
		}
		buildDir = dir
	}
	b := binaries[pkg]
	if b == nil {
		b = &build{path: filepath.Join(buildDir, filepath.Base(pkg))}
		binaries[pkg] = b
	}
	mu.Unlock()
	b.once.Do(func() {
		b.out, b.err = exec.Command("go", "build", "-o", b.path, pkg).CombinedOutput()
	})
	if b.err != nil {
		tb.Fatalf("build %s: %v\n%s", pkg, b.err, b.out)
	}
	return b.path
}

// TempFile writes data to a file named name in a directory removed when
// the test ends, with mode perm, and returns its path.
func TempFile(tb testing.TB, name string, data []byte, perm os.FileMode) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, data, perm); err != nil {
		tb.Fatal(fmt.Errorf("write %s: %w", path, err))
	}
	return path
}

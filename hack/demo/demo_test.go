package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestDemo runs `make demo`'s program against freshly built binaries, so a
// change that breaks the README's first command fails make test.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	// The demo reads FLY_API_* to choose a real API; the test uses the double.
	t.Setenv("FLY_API_BASE_URL", "")
	t.Setenv("FLY_API_TOKEN", "")
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "github.com/glaceon/glaceon/cmd/glaceon", "github.com/glaceon/glaceon/cmd/glaceon-sidecar")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build: %v", err)
	}
	d := demo{glaceonBin: filepath.Join(bin, "glaceon"), sidecarBin: filepath.Join(bin, "glaceon-sidecar")}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := d.run(ctx); err != nil {
		t.Fatalf("demo: %v", err)
	}
}

package sidecar

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestSetMemoryLimit(t *testing.T) {
	prevLimit := debug.SetMemoryLimit(math.MaxInt64)
	prevGC := debug.SetGCPercent(100)
	defer func() { debug.SetMemoryLimit(prevLimit); debug.SetGCPercent(prevGC) }()
	saved := cgroupMemFiles
	defer func() { cgroupMemFiles = saved }()

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	noEnv := func(string) string { return "" }
	cases := []struct {
		name   string
		files  []string
		env    func(string) string
		want   int64
		source string
	}{
		{"cgroup v2 limit", []string{write("v2", "134217728\n")}, noEnv, 96 << 20, ""},
		{"cgroup v2 max", []string{write("v2max", "max\n")}, noEnv, DefaultMemoryLimit, "default"},
		{"cgroup v1 unlimited", []string{filepath.Join(dir, "missing"), write("v1", "9223372036854771712\n")}, noEnv, DefaultMemoryLimit, "default"},
		{"no cgroup files", []string{filepath.Join(dir, "missing")}, noEnv, DefaultMemoryLimit, "default"},
		{"GOMEMLIMIT wins", []string{write("v2b", "134217728\n")}, func(k string) string {
			if k == "GOMEMLIMIT" {
				return "200MiB"
			}
			return ""
		}, 0, "GOMEMLIMIT"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cgroupMemFiles = c.files
			got, src := SetMemoryLimit(c.env)
			if got != c.want || (c.source != "" && src != c.source) {
				t.Fatalf("got %d from %q, want %d from %q", got, src, c.want, c.source)
			}
			if got != 0 && debug.SetMemoryLimit(-1) != got {
				t.Fatal("limit not applied")
			}
		})
	}
	debug.SetGCPercent(100)
	SetMemoryLimit(func(k string) string {
		if k == "GOGC" {
			return "200"
		}
		return ""
	})
	if debug.SetGCPercent(100) != 100 {
		t.Fatal("GOGC set in the environment, yet the GC percent changed")
	}
	SetMemoryLimit(noEnv)
	if p := debug.SetGCPercent(100); p != DefaultGCPercent {
		t.Fatalf("GC percent %d, want %d", p, DefaultGCPercent)
	}
}

package benchproc

import (
	"os"
	"testing"
)

func TestSelf(t *testing.T) {
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSSKiB <= 0 || m.HWMKiB < m.RSSKiB {
		t.Fatalf("memory %+v: want 0 < RSS ≤ HWM", m)
	}
	// A Go test binary has a heap and maps its own text: both parts are
	// there, and together they are at most the resident set (RssShmem is
	// the rest).
	if m.AnonKiB <= 0 || m.FileKiB <= 0 || m.AnonKiB+m.FileKiB > m.RSSKiB {
		t.Fatalf("memory %+v: want anonymous and file-backed parts that add up to at most RSS", m)
	}
	// Burn a little CPU so utime moves past one tick.
	x := 0
	for i := 0; i < 50_000_000; i++ {
		x += i % 7
	}
	c, err := CPUSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if c <= 0 {
		t.Fatalf("cpu %v s after a busy loop (x=%d)", c, x)
	}
	if _, err := ReadMemory(-1); err == nil {
		t.Fatal("no error for a process that cannot exist")
	}
}

func TestEnvFlag(t *testing.T) {
	var e EnvFlag
	for _, kv := range []string{"GLACEON_TUNING=rack=1,minrto=50ms", "GOMEMLIMIT=32MiB", "EMPTY="} {
		if err := e.Set(kv); err != nil {
			t.Fatalf("Set(%q): %v", kv, err)
		}
	}
	if len(e) != 3 || e[0] != "GLACEON_TUNING=rack=1,minrto=50ms" {
		t.Errorf("got %q, want each value whole, commas kept", e)
	}
	for _, bad := range []string{"", "=1", "NOEQUALS", "A B=1"} {
		if err := e.Set(bad); err == nil {
			t.Errorf("Set(%q): no error", bad)
		}
	}
}

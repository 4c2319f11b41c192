package benchproc

import (
	"errors"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMain lets the test binary stand in for a proxy (BENCHPROC_FAKE=1): it
// exits at once while the file BENCHPROC_FAIL names holds a count above
// zero (decrementing it), and otherwise serves /readyz on --health-addr
// until SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv("BENCHPROC_FAKE") == "1" {
		fakeProxy()
		return
	}
	os.Exit(m.Run())
}

func fakeProxy() {
	if f := os.Getenv("BENCHPROC_FAIL"); f != "" {
		b, _ := os.ReadFile(f)
		if n := strings.TrimSpace(string(b)); n != "0" {
			_ = os.WriteFile(f, []byte{n[0] - 1}, 0o600)
			os.Exit(1)
		}
	}
	var health string
	for i, a := range os.Args {
		if a == "--health-addr" && i+1 < len(os.Args) {
			health = os.Args[i+1]
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	srv := &http.Server{Addr: health, Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	go func() { _ = srv.ListenAndServe() }()
	<-stop
	os.Exit(0)
}

// A proxy that dies before it is ready (as when another process took its
// port) is started again, and one that never starts fails after
// startAttempts tries with an error that says so.
func TestStartRetries(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fails   string
		wantErr bool
	}{
		{"0", false},
		{"2", false},
		{"3", true},
	} {
		count := filepath.Join(t.TempDir(), "fail")
		if err := os.WriteFile(count, []byte(tc.fails), 0o600); err != nil {
			t.Fatal(err)
		}
		p, _, err := Start(self, "unused.conf", []string{"BENCHPROC_FAKE=1", "BENCHPROC_FAIL=" + count})
		if tc.wantErr {
			if err == nil || !errors.Is(err, errExited) || !strings.Contains(err.Error(), "3 attempts") {
				t.Fatalf("%s failures: err %v, want %d attempts that exited before ready", tc.fails, err, startAttempts)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s failures: %v", tc.fails, err)
		}
		p.Stop()
		if b, _ := os.ReadFile(count); string(b) != "0" {
			t.Fatalf("%s failures: count left at %q, want every failure used", tc.fails, b)
		}
	}
}

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

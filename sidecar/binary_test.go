package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/glaceon/glaceon/hack/testkit"
)

// sidecarBinary is cmd/glaceon-sidecar, built once per test run.
func sidecarBinary(t testing.TB) string { return testkit.SidecarBinary(t) }

func TestMain(m *testing.M) { os.Exit(testkit.Run(m)) }

const validConfig = `
[Interface]
PrivateKey = WAmgVYXkbT2bCtdcDwolI88/iVi/aV3/PHcUBTQSYmo=
Address = fdaa:0:18:a7b:d6b:0:a:2/120
DNS = fdaa:0:18::3

[Peer]
PublicKey = 3QN7QtTYyVz9sfjiqCkhZqHXxdGVZGKPEjkCDLSRyWE=
AllowedIPs = fdaa:0:18::/48
Endpoint = localhost:51820
PersistentKeepalive = 15
`

func TestBinaryBadInput(t *testing.T) {
	bin := sidecarBinary(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.conf", validConfig)
	badKey := write("badkey.conf", strings.Replace(validConfig, "WAmgVYXkbT2bCtdcDwolI88/iVi/aV3/PHcUBTQSYmo=", "not-a-key", 1))
	badAddr := write("badaddr.conf", strings.Replace(validConfig, "fdaa:0:18:a7b:d6b:0:a:2/120", "fdaa:::zz/120", 1))
	noPeer := write("nopeer.conf", validConfig[:strings.Index(validConfig, "[Peer]")])
	unreadable := write("unreadable.conf", validConfig)
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	fw := "127.0.0.1:" + strings.Split(freeAddr(t), ":")[1] + "=app.flycast:80"
	health := "--health-addr=" + freeAddr(t)

	cases := []struct {
		name  string
		args  []string
		env   []string
		field string
	}{
		{"no flags", nil, nil, "--wg-config"},
		{"missing file", []string{"--wg-config", filepath.Join(dir, "nope.conf"), "--forward", fw}, nil, "--wg-config"},
		{"bad key", []string{"--wg-config", badKey, "--forward", fw}, nil, "--wg-config"},
		{"bad address", []string{"--wg-config", badAddr, "--forward", fw}, nil, "--wg-config"},
		{"no peer section", []string{"--wg-config", noPeer, "--forward", fw}, nil, "--wg-config"},
		{"no forward", []string{"--wg-config", good}, nil, "--forward"},
		{"duplicate listen", []string{"--wg-config", good, "--forward", fw, "--forward", fw}, nil, "--forward"},
		{"public target", []string{"--wg-config", good, "--forward", "127.0.0.1:1=example.com:80"}, nil, "--forward"},
		{"port out of range", []string{"--wg-config", good, "--forward", "127.0.0.1:80=app.flycast:99999"}, nil, "--forward"},
		{"listen port in use", []string{"--wg-config", good, health, "--forward", busy.Addr().String() + "=app.flycast:80"}, nil, "--forward"},
		{"health port in use", []string{"--wg-config", good, "--health-addr", busy.Addr().String(), "--forward", fw}, nil, "--health-addr"},
		{"bad env forward", nil, []string{EnvWGConfig + "=" + good, EnvForward + "=127.0.0.1:80=app.fly.dev:80"}, EnvForward},
		{"bad mtu", []string{"--wg-config", good, "--forward", fw, "--mtu", "9"}, nil, "--mtu"},
		{"unknown flag", []string{"--wg-confg", good}, nil, "--wg-confg"},
	}
	if os.Geteuid() != 0 { // root reads mode-0 files
		cases = append(cases, struct {
			name  string
			args  []string
			env   []string
			field string
		}{"unreadable file", []string{"--wg-config", unreadable, "--forward", fw}, nil, "--wg-config"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, c.args...)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, c.env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			err := cmd.Run()
			elapsed := time.Since(start)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("exit: %v (stderr %q), want a non-zero exit", err, stderr.String())
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") {
				t.Fatalf("stderr is not exactly one line: %q", msg)
			}
			if !strings.HasPrefix(msg, "glaceon-sidecar: "+c.field+": ") {
				t.Fatalf("stderr %q does not name %s", msg, c.field)
			}
			if strings.Contains(msg, "WAmgVYXkbT2b") {
				t.Fatalf("stderr leaks the private key: %q", msg)
			}
			if stdout.Len() != 0 {
				t.Fatalf("stdout not empty: %q", stdout.String())
			}
			t.Logf("exit %d after %v: %s", ee.ExitCode(), elapsed.Round(time.Millisecond), strings.TrimSpace(msg))
		})
	}
}

func TestBinarySIGTERMDrains(t *testing.T) {
	bin := sidecarBinary(t)
	srv := startFly(t)
	cfg := newPeerFile(t, srv, "personal")
	listen, health := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--wg-config", cfg, "--forward", listen+"=echo.flycast:7",
		"--health-addr", health, "--shutdown-grace", "20s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("sidecar stderr:\n%s", stderr.String())
		}
	}()
	cl := &httpGetter{}
	waitFor(t, 15*time.Second, "binary ready", func() bool { return cl.ok("http://" + health + "/readyz") })

	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if _, err := c.Write([]byte("before\n")); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, br); got != "before\n" {
		t.Fatalf("echo %q", got)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// New connections are refused once the listener is closed...
	waitFor(t, 10*time.Second, "listener closed after SIGTERM", func() bool {
		nc, err := net.DialTimeout("tcp", listen, time.Second)
		if err != nil {
			return true
		}
		nc.Close()
		return false
	})
	// ...while the open one keeps working.
	if _, err := c.Write([]byte("during drain\n")); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, br); got != "during drain\n" {
		t.Fatalf("echo during drain %q", got)
	}
	select {
	case err := <-exited:
		t.Fatalf("sidecar exited (%v) while a connection was open within the grace period", err)
	default:
	}
	c.Close()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after drain: %v, want status 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("sidecar did not exit after its last connection closed")
	}
	if strings.Contains(stderr.String(), "PrivateKey") {
		t.Fatal("logs mention the private key")
	}
}

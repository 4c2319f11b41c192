package sidecar

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
)

const envIPv6Child = "GLACEON_TEST_IPV6_ONLY_CHILD"

// TestIPv6OnlyPod runs the sidecar in a network namespace whose only
// address is ::1 (an IPv6-only pod: the kubelet probes an IPv6 address).
// The test binary re-runs itself inside the namespace; the Fly double, its
// gateway and the sidecar all live there. With the health address the
// injector passes ([::]), the probes answer on ::1 and traffic flows.
func TestIPv6OnlyPod(t *testing.T) {
	if os.Getenv(envIPv6Child) == "1" {
		ipv6OnlyChild(t)
		return
	}
	ns := fmt.Sprintf("glaceon-v6-%08x", rand.Uint32())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s (this test needs root and iproute2 to make a network namespace)", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run("-n", ns, "link", "set", "lo", "up")
	run("-n", ns, "addr", "del", "127.0.0.1/8", "dev", "lo")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, os.Args[0], "-test.run", "^TestIPv6OnlyPod$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envIPv6Child+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestIPv6OnlyPod") {
		t.Fatalf("in the IPv6-only namespace: %v\n%s", err, out)
	}
	t.Logf("in the IPv6-only namespace:\n%s", out)
}

func ipv6OnlyChild(t *testing.T) {
	if ln, err := net.Listen("tcp4", "127.0.0.1:0"); err == nil {
		ln.Close()
		t.Fatal("127.0.0.1 exists: not an IPv6-only namespace")
	}
	free := func() string {
		ln, err := net.Listen("tcp6", "[::1]:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	srv := flyapitest.Start(t, flyapitest.Options{Listen: "[::1]:0", GatewayHost: "::1"})
	cfgPath := newPeerFile(t, srv, "personal")
	_, healthPort, _ := net.SplitHostPort(free())
	listen := free()
	opts, err := ParseOptions([]string{"--wg-config", cfgPath, "--forward", listen + "=twi-ollama.flycast:80",
		"--health-addr", "[::]:" + healthPort, "--shutdown-grace", "1s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadWireGuardConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(opts, cfg, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	cl := &httpGetter{}
	// The kubelet's startup probe, on the pod's (only) IPv6 address.
	probe := "http://[::1]:" + healthPort
	waitFor(t, 30*time.Second, "/readyz on [::1]", func() bool { return cl.ok(probe + "/readyz") })
	if !cl.ok(probe + "/healthz") {
		t.Fatal("/healthz on [::1] failed")
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + listen + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(b)) != "ok twi-ollama" {
		t.Fatalf("GET / through the tunnel = %d %q", resp.StatusCode, b)
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgquick"
)

// runCLI runs glaceon in-process with args and returns its exit code and
// output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// useDouble points the CLI's environment at a fresh Fly double.
func useDouble(t *testing.T) *flyapitest.Server {
	t.Helper()
	fly := flyapitest.Start(t, flyapitest.Options{})
	t.Setenv("FLY_API_BASE_URL", fly.URL())
	t.Setenv("FLY_API_TOKEN", fly.Token())
	t.Setenv("FLY_ACCESS_TOKEN", "")
	t.Setenv("FLY_WG_GATEWAY_PORT", fmt.Sprint(fly.GatewayPort()))
	return fly
}

// TestPeerCreateThenTunnel is the end-to-end proof: `glaceon peer create`
// writes a wg-quick file, and a real wireguard-go netstack client built from
// that file alone reaches an app through the double's gateway.
func TestPeerCreateThenTunnel(t *testing.T) {
	fly := useDouble(t)
	out := filepath.Join(t.TempDir(), "fly0.conf")

	code, _, stderr := runCLI(t, "peer", "create", "--org", "personal", "--name", "k8s-e2e-1", "--out", out)
	if code != exitOK {
		t.Fatalf("peer create: exit %d: %s", code, stderr)
	}
	info, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("wg-quick file mode = %o, want 0600", perm)
	}
	peers := fly.Peers("personal")
	if len(peers) != 1 || peers[0].Name != "k8s-e2e-1" {
		t.Fatalf("double has peers %+v, want exactly k8s-e2e-1", peers)
	}
	if peers[0].Region != fly.Region() {
		t.Errorf("peer region = %q, want the nearest gateway region %q", peers[0].Region, fly.Region())
	}

	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := wgquick.Parse(data)
	if err != nil {
		t.Fatalf("parse written file: %v\n%s", err, data)
	}
	tnet := dialTunnel(t, cfg)

	httpc := &http.Client{Transport: &http.Transport{DialContext: tnet.DialContext}, Timeout: 10 * time.Second}
	resp, err := httpc.Get("http://twi-ollama.flycast/")
	if err != nil {
		t.Fatalf("GET through the tunnel: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := strings.TrimSpace(string(body)); got != "ok twi-ollama" {
		t.Errorf("body = %q, want %q", got, "ok twi-ollama")
	}

	code, stdout, stderr := runCLI(t, "peer", "list", "--org", "personal")
	if code != exitOK || !strings.Contains(stdout, "k8s-e2e-1") {
		t.Errorf("peer list: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	if code, _, stderr := runCLI(t, "peer", "remove", "--org", "personal", "--name", "k8s-e2e-1"); code != exitOK {
		t.Fatalf("peer remove: exit %d: %s", code, stderr)
	}
	if n := len(fly.Peers("personal")); n != 0 {
		t.Errorf("%d peers left after remove", n)
	}
	// Removing again is success: the peer is already gone.
	if code, _, stderr := runCLI(t, "peer", "remove", "--org", "personal", "--name", "k8s-e2e-1"); code != exitOK {
		t.Errorf("second peer remove: exit %d: %s", code, stderr)
	}
}

// dialTunnel brings up a wireguard-go device on a netstack from cfg.
func dialTunnel(t *testing.T, cfg *wgquick.Config) *netstack.Net {
	t.Helper()
	tun, tnet, err := netstack.CreateNetTUN([]netip.Addr{cfg.Address}, []netip.Addr{cfg.DNS}, 1420)
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(cfg.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
	if err != nil || len(ips) == 0 {
		t.Fatalf("resolve endpoint %q: %v", host, err)
	}
	dev := device.NewDevice(tun, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, "wg: "))
	t.Cleanup(dev.Close)
	uapi := fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=%s\npersistent_keepalive_interval=%d\n",
		cfg.PrivateKey.Hex(), cfg.PeerPublicKey.Hex(), net.JoinHostPort(ips[0].Unmap().String(), port), cfg.PersistentKeepalive)
	for _, p := range cfg.AllowedIPs {
		uapi += "allowed_ip=" + p.String() + "\n"
	}
	if err := dev.IpcSet(uapi); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	return tnet
}

func TestPeerCreateErrors(t *testing.T) {
	fly := useDouble(t)
	dir := t.TempDir()
	existing := filepath.Join(dir, "exists.conf")
	if err := os.WriteFile(existing, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "no org", args: []string{"peer", "create", "--name", "x"}, wantCode: exitUsage, wantErr: "--org is required"},
		{name: "no name", args: []string{"peer", "create", "--org", "personal"}, wantCode: exitUsage, wantErr: "--name is required"},
		{name: "stray argument", args: []string{"peer", "create", "--org", "personal", "--name", "x", "extra"}, wantCode: exitUsage, wantErr: "unexpected argument"},
		{name: "existing out file", args: []string{"peer", "create", "--org", "personal", "--name", "x", "--out", existing}, wantCode: exitUsage, wantErr: "already exists; pass --force"},
		{name: "unknown org", args: []string{"peer", "create", "--org", "nope", "--name", "x"}, wantCode: exitError, wantErr: `organization "nope" not found`},
		{name: "rejected token", env: map[string]string{"FLY_API_TOKEN": "Bearer fo1_not-the-right-one"}, args: []string{"peer", "create", "--org", "personal", "--name", "x"}, wantCode: exitError, wantErr: "rejected the token from FLY_API_TOKEN"},
		{name: "rejected access token", env: map[string]string{"FLY_API_TOKEN": "", "FLY_ACCESS_TOKEN": "fo1_wrong"}, args: []string{"peer", "list", "--org", "personal"}, wantCode: exitError, wantErr: "rejected the token from FLY_ACCESS_TOKEN"},
		{name: "no token", env: map[string]string{"FLY_API_TOKEN": "", "FLY_ACCESS_TOKEN": ""}, args: []string{"peer", "list", "--org", "personal"}, wantCode: exitError, wantErr: "FLY_API_TOKEN"},
		{name: "bad peer name", args: []string{"peer", "create", "--org", "personal", "--name", "Bad_Name"}, wantCode: exitUsage, wantErr: "--name"},
		{name: "unknown subcommand", args: []string{"peer", "frobnicate"}, wantCode: exitUsage, wantErr: `unknown subcommand "frobnicate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, stderr)
			}
			if !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.wantErr)
			}
			if strings.Contains(stderr+stdout, fly.Token()) {
				t.Errorf("output contains the token")
			}
			if n := len(fly.Peers("personal")); n != 0 {
				t.Errorf("%d peers left at the double", n)
			}
		})
	}
	if got, err := os.ReadFile(existing); err != nil || string(got) != "keep" {
		t.Errorf("existing file was changed: %q, %v", got, err)
	}
}

// TestREADMECommandLines runs the README's glaceon command lines that the
// other tests do not: peer create with --region and --out, manager --help.
func TestREADMECommandLines(t *testing.T) {
	fly := useDouble(t)
	out := filepath.Join(t.TempDir(), "fly0.conf")
	code, _, stderr := runCLI(t, "peer", "create", "--org", "personal", "--region", "yyz", "--name", "k8s-laptop-1", "--out", out)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if p := fly.Peers("personal"); len(p) != 1 || p[0].Region != "yyz" {
		t.Errorf("peers = %+v, want one in yyz", p)
	}
	if code, stdout, _ := runCLI(t, "manager", "--help"); code != exitOK || stdout != "" {
		t.Errorf("manager --help: exit %d", code)
	}
}

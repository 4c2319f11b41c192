package sidecar

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// connectProxy is a small HTTPS (CONNECT) proxy on loopback. Whatever host
// is asked for, it connects to 127.0.0.1 on the one allowed port: the test
// never sends traffic anywhere else.
type connectProxy struct {
	addr    string
	allowed int
	mu      sync.Mutex
	seen    []string
	srv     *http.Server
	wg      sync.WaitGroup
	closing chan struct{}
}

func startConnectProxy(t *testing.T, allowedPort int) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{addr: ln.Addr().String(), allowed: allowedPort, closing: make(chan struct{})}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	t.Cleanup(func() {
		close(p.closing)
		_ = p.srv.Close()
		p.wg.Wait()
	})
	return p
}

func (p *connectProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.seen = append(p.seen, r.Method+" "+r.Host)
	p.mu.Unlock()
	_, port, err := net.SplitHostPort(r.Host)
	if r.Method != http.MethodConnect || err != nil || port != strconv.Itoa(p.allowed) {
		http.Error(w, "only CONNECT to the test gateway", http.StatusForbidden)
		return
	}
	up, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", port), 5*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return
	}
	_, _ = c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(up, brw); done <- struct{}{} }()
		go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
		select {
		case <-done:
		case <-p.closing:
		}
		c.Close()
		up.Close()
		<-done
	}()
}

func (p *connectProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// The real binary reaches the gateway's WebSocket through HTTPS_PROXY. The
// gateway's name does not resolve here: only the proxy knows where it is,
// as behind corporate egress.
func TestBinaryWebSocketThroughHTTPSProxy(t *testing.T) {
	bin := sidecarBinary(t)
	srv := startFly(t)
	proxy := startConnectProxy(t, srv.WebSocketPort())
	cfgPath := newPeerFile(t, srv, "personal")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("Endpoint = localhost:"), []byte("Endpoint = fly-gateway.test:"), 1)
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"HTTPS_PROXY": "http://" + proxy.addr, "https_proxy": "http://" + proxy.addr,
		"NO_PROXY": "", "no_proxy": "", EnvTransport: "websocket",
	} {
		t.Setenv(k, v)
	}
	listen, health := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--wg-config", cfgPath, "--forward", listen+"=twi-ollama.flycast:80", "--health-addr", health)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sidecar stderr:\n%s", stderr.String())
		}
	}()
	cl := &httpGetter{}
	waitFor(t, 15*time.Second, "binary ready through the proxy", func() bool { return cl.ok("http://" + health + "/readyz") })
	resp, err := http.Get("http://" + health + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "transport=websocket") {
		t.Fatalf("/readyz %q", body)
	}
	if !cl.ok("http://" + listen + "/") {
		t.Fatal("GET through the tunnel failed")
	}
	want := "CONNECT fly-gateway.test:" + strconv.Itoa(srv.WebSocketPort())
	reqs := proxy.requests()
	if len(reqs) == 0 || reqs[0] != want {
		t.Fatalf("proxy saw %q, want %q", reqs, want)
	}
}

package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/go-logr/logr/testr"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgquick"
)

// newPeerFile creates a peer in org through the Fly API double with the real
// client and writes its wg-quick file, as `glaceon peer create` would.
func newPeerFile(t testing.TB, srv *flyapitest.Server, org string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := flyapi.New(flyapi.Options{BaseURL: srv.URL(), Token: srv.Token(), GatewayPort: srv.GatewayPort()})
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.Organization(ctx, org)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := wgquick.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	created, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: *o, Name: fmt.Sprintf("k8s-test-%08x", rand.Uint32()), PublicKey: kp.Public, Region: srv.Region()})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := flyapi.NewWireGuardConfig(kp.Private, *created, srv.GatewayPort())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "wg.conf")
	if err := os.WriteFile(path, cfg.Render(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type running struct {
	once   sync.Once
	s      *Sidecar
	cancel context.CancelFunc
	done   chan error
	http   *http.Client
}

// startSidecar runs a Sidecar in-process with the given targets and waits
// until it is ready. It returns the listen address of each target.
func startSidecar(t testing.TB, cfgPath string, targets ...string) (*running, []string) {
	t.Helper()
	return startSidecarWithLog(t, testr.NewWithInterface(t, testr.Options{Verbosity: 0}), cfgPath, targets...)
}

func startSidecarWithLog(t testing.TB, log logr.Logger, cfgPath string, targets ...string) (*running, []string) {
	t.Helper()
	return startSidecarOpts(t, log, nil, cfgPath, targets...)
}

// startSidecarOpts: before Run, prepare may adjust the Sidecar (tests only).
func startSidecarOpts(t testing.TB, log logr.Logger, prepare func(*Sidecar), cfgPath string, targets ...string) (*running, []string) {
	t.Helper()
	r, addrs := launchSidecar(t, log, prepare, cfgPath, targets...)
	waitFor(t, 15*time.Second, "sidecar ready", r.s.Ready)
	return r, addrs
}

// launchSidecar starts a Sidecar in-process and returns without waiting for
// readiness.
func launchSidecar(t testing.TB, log logr.Logger, prepare func(*Sidecar), cfgPath string, targets ...string) (*running, []string) {
	t.Helper()
	args := []string{"--wg-config", cfgPath, "--health-addr", freeAddr(t), "--metrics-addr", freeAddr(t), "--shutdown-grace", "2s"}
	var addrs []string
	for _, tg := range targets {
		if listen, _, ok := strings.Cut(tg, "="); ok { // a full LISTEN=TARGET
			addrs = append(addrs, listen)
			args = append(args, "--forward", tg)
			continue
		}
		a := freeAddr(t)
		addrs = append(addrs, a)
		args = append(args, "--forward", a+"="+tg)
	}
	opts, err := ParseOptions(args, testGetenv)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadWireGuardConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(opts, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, cancel: cancel, done: make(chan error, 1),
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(r.stop)
	return r, addrs
}

func (r *running) stop() {
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				panic("sidecar Run: " + err.Error())
			}
		case <-time.After(15 * time.Second):
			panic("sidecar did not stop within 15s")
		}
	})
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *running) get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := r.http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

func (r *running) metric(t testing.TB, prefix string) string {
	t.Helper()
	_, body := r.get(t, "http://"+r.s.MetricsAddr()+"/metrics")
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimSpace(strings.TrimPrefix(l, prefix))
		}
	}
	return ""
}

func startFly(t testing.TB) *flyapitest.Server {
	t.Helper()
	srv := flyapitest.Start(t, flyapitest.Options{})
	// Sidecars started by the test (in-process or binaries) reach the
	// double's WebSocket port instead of 443.
	t.Setenv(EnvWebSocketPort, strconv.Itoa(srv.WebSocketPort()))
	return srv
}

// testGetenv passes the transport and tuning settings a test may set with
// t.Setenv, and nothing else from the environment.
func testGetenv(k string) string {
	if k == EnvWebSocketPort || k == EnvTransport || k == EnvTuning {
		return os.Getenv(k)
	}
	return ""
}

func TestE2EHTTPAndHealth(t *testing.T) {
	checkGoroutines(t)
	srv := startFly(t)
	r, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), "twi-ollama.flycast:80")

	code, body := r.get(t, "http://"+addrs[0]+"/")
	if code != 200 || strings.TrimSpace(body) != "ok twi-ollama" {
		t.Fatalf("GET / through the tunnel = %d %q", code, body)
	}
	code, body = r.get(t, "http://"+addrs[0]+"/bytes?n=100000")
	if code != 200 || len(body) != 100000 {
		t.Fatalf("GET /bytes = %d, %d bytes", code, len(body))
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := r.get(t, "http://"+r.s.HealthAddr()+p); code != 200 {
			t.Fatalf("%s = %d %q", p, code, body)
		}
	}
	name := addrs[0] + "=twi-ollama.flycast:80"
	if v := r.metric(t, `glaceon_forward_connections_total{forward="`+name+`"} `); v != "2" {
		t.Fatalf("connections_total = %q, want 2", v)
	}
	if v := r.metric(t, `glaceon_forward_bytes_total{direction="in",forward="`+name+`"} `); v == "" || v == "0" {
		t.Fatalf("bytes in = %q", v)
	}
	if v := r.metric(t, `glaceon_wireguard_last_handshake_age_seconds `); v == "" || strings.HasPrefix(v, "-") {
		t.Fatalf("handshake age = %q", v)
	}
	if v := r.metric(t, `glaceon_ready `); v != "1" {
		t.Fatalf("glaceon_ready = %q", v)
	}
}

// echoRoundTrip sends data, half-closes and checks everything comes back.
func echoRoundTrip(addr string, data []byte, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		return fmt.Errorf("write: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", len(got), err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("echo returned %d bytes, want %d (equal=%v)", len(got), len(data), bytes.Equal(got, data))
	}
	return nil
}

func TestE2ETCPEchoAndConcurrency(t *testing.T) {
	checkGoroutines(t)
	srv := startFly(t)
	r, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), "echo.flycast:7")

	if err := echoRoundTrip(addrs[0], []byte("hello through fly\n"), 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// 100 concurrent connections, each with its own payload.
	const conns = 100
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := make([]byte, 16<<10)
			rng := rand.NewChaCha8([32]byte{byte(i)})
			_, _ = rng.Read(data)
			if err := echoRoundTrip(addrs[0], data, 60*time.Second); err != nil {
				errs <- fmt.Errorf("conn %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	name := addrs[0] + "=echo.flycast:7"
	if v := r.metric(t, `glaceon_forward_connections_total{forward="`+name+`"} `); v != "101" {
		t.Fatalf("connections_total = %q, want 101", v)
	}
	waitFor(t, 10*time.Second, "active connections back to 0", func() bool {
		return r.metric(t, `glaceon_forward_connections_active{forward="`+name+`"} `) == "0"
	})
}

func TestE2ELargeTransferBothWays(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB each way")
	}
	checkGoroutines(t)
	srv := startFly(t)
	_, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), "echo.flycast:7")

	const size = 64 << 20
	c, err := net.DialTimeout("tcp", addrs[0], 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{42}), size), sent)
		_, err := io.CopyBuffer(c, src, make([]byte, 256<<10))
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got := sha256.New()
	n, err := io.CopyBuffer(got, c, make([]byte, 256<<10))
	if err != nil {
		t.Fatalf("read after %d bytes: %v", n, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n != size || !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatalf("echoed %d of %d bytes; checksums equal: %v", n, size, bytes.Equal(sent.Sum(nil), got.Sum(nil)))
	}
}

func TestE2ETwoForwardsTwoApps(t *testing.T) {
	checkGoroutines(t)
	srv := startFly(t)
	r, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), "twi-ollama.flycast:80", "db.internal:80")
	for i, app := range []string{"twi-ollama", "db"} {
		code, body := r.get(t, "http://"+addrs[i]+"/")
		if code != 200 || strings.TrimSpace(body) != "ok "+app {
			t.Fatalf("forward %d: %d %q, want ok %s", i, code, body, app)
		}
	}
}

func TestE2ENXDomainClosesPromptly(t *testing.T) {
	checkGoroutines(t)
	srv := startFly(t)
	r, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), "no-such-app.flycast:80")
	for i := 0; i < 3; i++ {
		c, err := net.DialTimeout("tcp", addrs[0], 5*time.Second)
		if err != nil {
			// The reset can beat connect(2) back to the client: also closed.
			if strings.Contains(err.Error(), "reset") {
				continue
			}
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		n, err := c.Read(make([]byte, 10))
		c.Close()
		if n != 0 || err == nil {
			t.Fatalf("read from a forward to an unknown app: n=%d err=%v, want the connection closed", n, err)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection to an unknown app was not closed within 10s")
		}
	}
	name := addrs[0] + "=no-such-app.flycast:80"
	if v := r.metric(t, `glaceon_dial_errors_total{forward="`+name+`",reason="dns"} `); v != "3" {
		t.Fatalf("dial_errors{reason=dns} = %q, want 3", v)
	}
	// The tunnel itself is fine: still ready.
	if !r.s.Ready() {
		t.Fatal("not ready after NXDOMAIN targets")
	}
}

func TestE2EGatewayRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for tunnel recovery")
	}
	checkGoroutines(t)
	srv := startFly(t)
	r, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), "twi-ollama.flycast:80")
	if code, _ := r.get(t, "http://"+addrs[0]+"/"); code != 200 {
		t.Fatalf("before restart: %d", code)
	}
	if err := srv.StopGateway(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "readyz false while the gateway is down", func() bool { return !r.s.Ready() })
	code, _ := r.get(t, "http://"+r.s.HealthAddr()+"/readyz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d while the gateway is down", code)
	}
	if code, _ := r.get(t, "http://"+r.s.HealthAddr()+"/healthz"); code != 200 {
		t.Fatalf("/healthz = %d while the gateway is down; liveness must not depend on the network", code)
	}
	if err := srv.StartGateway(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "ready again after the gateway restarted", r.s.Ready)
	if code, body := r.get(t, "http://"+addrs[0]+"/"); code != 200 || strings.TrimSpace(body) != "ok twi-ollama" {
		t.Fatalf("after restart: %d %q", code, body)
	}
	if v := r.metric(t, `glaceon_wireguard_reconfigurations_total `); v == "" || v == "0" {
		t.Logf("recovered without a watchdog reconfiguration (reconfigurations=%q)", v)
	}
}

// readLine reads one line or fails after d.
func readLine(t testing.TB, br *bufio.Reader) string {
	t.Helper()
	s, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read line: %v (got %q)", err, s)
	}
	return s
}

type httpGetter struct{}

func (httpGetter) ok(url string) bool {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// Logs (at the most verbose level, wireguard-go's included) never contain
// the private key, in base64 or hex.
func TestE2ELogsNeverContainPrivateKey(t *testing.T) {
	checkGoroutines(t)
	srv := startFly(t)
	path := newPeerFile(t, srv, "personal")
	cfg, err := LoadWireGuardConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs strings.Builder
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		logs.WriteString(prefix + " " + args + "\n")
	}, funcr.Options{Verbosity: 10})
	r, addrs := startSidecarWithLog(t, log, path, "twi-ollama.flycast:80", "nope.flycast:80")
	r.get(t, "http://"+addrs[0]+"/")
	if c, err := net.Dial("tcp", addrs[1]); err == nil {
		_, _ = c.Read(make([]byte, 1))
		c.Close()
	}
	r.stop()
	mu.Lock()
	defer mu.Unlock()
	out := logs.String()
	if !strings.Contains(out, "wireguard peer configured") || !strings.Contains(out, "dial to target failed") {
		t.Fatalf("expected log lines missing:\n%s", out)
	}
	for _, secret := range []string{cfg.PrivateKey.String(), cfg.PrivateKey.Hex()} {
		if strings.Contains(out, secret) {
			t.Fatalf("logs contain the private key")
		}
	}
}

// The gateway host resolves to a dead address first (the double listens on
// 127.0.0.1 only, so 127.0.0.2 never answers): the watchdog moves on to the
// next address and the tunnel comes up.
func TestE2EEndpointFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the watchdog")
	}
	checkGoroutines(t)
	srv := startFly(t)
	// UDP failover between gateway addresses; auto would take the
	// WebSocket before the watchdog moves on.
	t.Setenv(EnvTransport, string(TransportUDP))
	var lookups atomic.Int32
	prepare := func(s *Sidecar) {
		s.tun.lookupHost = func(ctx context.Context, host string) ([]netip.Addr, error) {
			lookups.Add(1)
			return []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}, nil
		}
	}
	start := time.Now()
	r, addrs := startSidecarOpts(t, testr.NewWithInterface(t, testr.Options{}), prepare, newPeerFile(t, srv, "personal"), "twi-ollama.flycast:80")
	t.Logf("ready after %v via %s", time.Since(start).Round(time.Millisecond), r.s.tun.endpoint())
	if ep := r.s.tun.endpoint(); ep != "127.0.0.1:"+strconv.Itoa(srv.GatewayPort()) {
		t.Fatalf("endpoint %s, want the live address", ep)
	}
	if code, body := r.get(t, "http://"+addrs[0]+"/"); code != 200 || strings.TrimSpace(body) != "ok twi-ollama" {
		t.Fatalf("after failover: %d %q", code, body)
	}
	if v := r.metric(t, `glaceon_wireguard_reconfigurations_total `); v == "" || v == "0" {
		t.Fatalf("reconfigurations = %q, want > 0", v)
	}
	if lookups.Load() < 2 {
		t.Fatalf("endpoint resolved %d times, want a re-resolution on reconfigure", lookups.Load())
	}
}

// Shared-proxy mode (0.0.0.0), an IPv6 loopback listener, and a target port
// nothing listens on (refused: closed at once and counted).
func TestE2EListenFormsAndRefused(t *testing.T) {
	checkGoroutines(t)
	srv := startFly(t)
	wildPort := strings.Split(freeAddr(t), ":")[1]
	forwards := []string{"0.0.0.0:" + wildPort + "=twi-ollama.flycast:80", "twi-ollama.flycast:81"}
	v6 := false
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		forwards = append(forwards, "[::1]:"+strings.Split(ln.Addr().String(), "]:")[1]+"=db.internal:80")
		ln.Close()
		v6 = true
	}
	r, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), forwards...)
	if code, body := r.get(t, "http://127.0.0.1:"+wildPort+"/"); code != 200 || strings.TrimSpace(body) != "ok twi-ollama" {
		t.Fatalf("0.0.0.0 listener: %d %q", code, body)
	}
	if v6 {
		if code, body := r.get(t, "http://"+addrs[2]+"/"); code != 200 || strings.TrimSpace(body) != "ok db" {
			t.Fatalf("[::1] listener: %d %q", code, body)
		}
	}
	c, err := net.DialTimeout("tcp", addrs[1], 5*time.Second)
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		n, rerr := c.Read(make([]byte, 1))
		c.Close()
		if n != 0 || rerr == nil {
			t.Fatalf("refused target: read n=%d err=%v, want the connection closed", n, rerr)
		}
		if ne, ok := rerr.(net.Error); ok && ne.Timeout() {
			t.Fatal("refused target: connection not closed within 10s")
		}
	}
	name := addrs[1] + "=twi-ollama.flycast:81"
	waitFor(t, 5*time.Second, "refused dial counted", func() bool {
		return r.metric(t, `glaceon_dial_errors_total{forward="`+name+`",reason="refused"} `) == "1"
	})
}

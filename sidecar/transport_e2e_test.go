package sidecar

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/sidecar/transport"
)

// patternSum is the SHA-256 of the first n bytes of the double's /bytes
// body (byte i is i % 251).
func patternSum(n int) []byte {
	h := sha256.New()
	buf := make([]byte, 251*256)
	for i := range buf {
		buf[i] = byte(i % 251)
	}
	for n > 0 {
		k := min(n, len(buf))
		h.Write(buf[:k])
		n -= k
	}
	return h.Sum(nil)
}

// echoLine writes a line on an open echo connection and checks it comes back.
func echoLine(t *testing.T, c net.Conn, br *bufio.Reader, line string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		t.Fatalf("echo write %q: %v", line, err)
	}
	if got := readLine(t, br); got != line+"\n" {
		t.Fatalf("echo %q, want %q", got, line)
	}
}

func (r *running) readyz(t *testing.T) (int, string) {
	t.Helper()
	return r.get(t, "http://"+r.s.HealthAddr()+"/readyz")
}

// UDP is blocked from the start; auto finds the WebSocket by itself, and
// HTTP and TCP go through it. The gateway saw flyctl's Origin header.
func TestE2ETransportUDPBlockedFromStart(t *testing.T) {
	checkGoroutines(t)
	srv := startFly(t)
	srv.BlockUDP(true)
	start := time.Now()
	r, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), "twi-ollama.flycast:80", "echo.flycast:7")
	t.Logf("ready over websocket %v after start", time.Since(start).Round(time.Millisecond))
	if p := r.s.tun.bind.Path(); p != transport.PathWebSocket {
		t.Fatalf("path %v, want websocket", p)
	}
	if code, body := r.readyz(t); code != 200 || !strings.Contains(body, "transport=websocket") {
		t.Fatalf("/readyz = %d %q, want it to name the websocket transport", code, body)
	}
	if code, body := r.get(t, "http://"+addrs[0]+"/"); code != 200 || strings.TrimSpace(body) != "ok twi-ollama" {
		t.Fatalf("GET over websocket = %d %q", code, body)
	}
	c, err := net.DialTimeout("tcp", addrs[1], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoLine(t, c, bufio.NewReader(c), "hello over tcp 443")

	st := srv.WebSocketStats()
	want := fmt.Sprintf("wss://localhost:%d/", srv.WebSocketPort())
	if st.Accepted < 1 || len(st.Origins) != 1 || st.Origins[0] != want {
		t.Fatalf("gateway websocket stats %+v, want an accepted connection with Origin %s", st, want)
	}
	if st.UDPDropped == 0 {
		t.Fatal("the gateway dropped no UDP datagram: the sidecar never tried UDP first")
	}
	for _, m := range []string{
		`glaceon_transport_current{transport="websocket"} 1`,
		`glaceon_transport_current{transport="udp"} 0`,
		`glaceon_transport_switches_total{to="websocket"} 1`,
	} {
		i := strings.LastIndexByte(m, ' ')
		if v := r.metric(t, m[:i+1]); v != m[i+1:] {
			t.Errorf("%s = %q, want %s", m[:i], v, m[i+1:])
		}
	}
	if v := r.metric(t, `glaceon_websocket_connects_total `); v == "" || v == "0" {
		t.Errorf("websocket connects = %q", v)
	}
	if v := r.metric(t, `glaceon_transport_frames_total{direction="in",transport="websocket"} `); v == "" || v == "0" {
		t.Errorf("websocket frames in = %q", v)
	}
}

// UDP is blocked in the middle of a 64 MiB download: it completes intact
// over the WebSocket, an echo connection opened before stays up; when UDP
// opens again the sidecar moves back, and the same connection still works.
func TestE2ETransportSwitchBothWays(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB download and a switch each way")
	}
	checkGoroutines(t)
	old := udpRetryEvery
	udpRetryEvery = 3 * time.Second
	t.Cleanup(func() { udpRetryEvery = old })
	srv := startFly(t)
	r, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), "twi-ollama.flycast:80", "echo.flycast:7")
	if p := r.s.tun.bind.Path(); p != transport.PathUDP {
		t.Fatalf("path %v with UDP open, want udp", p)
	}
	ec, err := net.DialTimeout("tcp", addrs[1], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	ebr := bufio.NewReader(ec)
	echoLine(t, ec, ebr, "on udp")

	const size = 64 << 20
	resp, err := (&http.Client{Timeout: 5 * time.Minute}).Get("http://" + addrs[0] + "/bytes?n=" + strconv.Itoa(size))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 8<<20); err != nil {
		t.Fatal(err)
	}
	srv.BlockUDP(true)
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("download broke after the switch: %v", err)
	}
	if n+8<<20 != size || !bytes.Equal(h.Sum(nil), patternSum(size)) {
		t.Fatalf("downloaded %d bytes, checksum ok %v", n+8<<20, bytes.Equal(h.Sum(nil), patternSum(size)))
	}
	waitFor(t, 20*time.Second, "path websocket", func() bool { return r.s.tun.bind.Path() == transport.PathWebSocket })
	echoLine(t, ec, ebr, "on websocket")

	srv.BlockUDP(false)
	waitFor(t, 30*time.Second, "back on udp", func() bool { return r.s.tun.bind.Path() == transport.PathUDP })
	echoLine(t, ec, ebr, "on udp again")
	code, body := r.get(t, "http://"+addrs[0]+"/bytes?n=1048576")
	if code != 200 || len(body) != 1<<20 {
		t.Fatalf("after moving back: %d, %d bytes", code, len(body))
	}
	if v := r.metric(t, `glaceon_transport_switches_total{to="udp"} `); v != "1" {
		t.Errorf("switches to udp = %q, want 1", v)
	}
	if v := r.metric(t, `glaceon_transport_frames_total{direction="in",transport="udp"} `); v == "" || v == "0" {
		t.Errorf("udp frames in = %q", v)
	}
}

// --transport udp with UDP blocked: never ready, and /readyz says why.
func TestE2ETransportUDPOnlyBlocked(t *testing.T) {
	checkGoroutines(t)
	srv := startFly(t)
	srv.BlockUDP(true)
	t.Setenv(EnvTransport, "udp")
	r, _ := launchSidecar(t, testr.New(t), nil, newPeerFile(t, srv, "personal"), "twi-ollama.flycast:80")
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		if r.s.Ready() {
			t.Fatal("ready over udp while UDP is blocked")
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, body := r.readyz(t)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "UDP to the gateway may be blocked") ||
		!strings.Contains(body, "--transport auto or websocket") || !strings.Contains(body, "transport=udp") {
		t.Fatalf("/readyz = %d %q, want the reason and the fix", code, body)
	}
	if st := srv.WebSocketStats(); st.Accepted != 0 {
		t.Fatalf("transport udp opened %d websockets", st.Accepted)
	}
}

// --transport websocket with UDP open: the WebSocket carries everything.
func TestE2ETransportWebSocketOnly(t *testing.T) {
	checkGoroutines(t)
	srv := startFly(t)
	t.Setenv(EnvTransport, "websocket")
	r, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), "twi-ollama.flycast:80")
	if code, body := r.get(t, "http://"+addrs[0]+"/"); code != 200 || strings.TrimSpace(body) != "ok twi-ollama" {
		t.Fatalf("GET = %d %q", code, body)
	}
	b := r.s.tun.bind
	if b.Path() != transport.PathWebSocket || b.Stats.FramesOut[transport.PathUDP].Load() != 0 {
		t.Fatalf("path %v, %d datagrams over udp; want websocket only", b.Path(), b.Stats.FramesOut[transport.PathUDP].Load())
	}
	if st := srv.WebSocketStats(); st.DatagramsIn == 0 || st.DatagramsOut == 0 {
		t.Fatalf("gateway websocket stats %+v", st)
	}
	if _, body := r.readyz(t); !strings.Contains(body, "transport=websocket") || strings.Contains(body, "auto") {
		t.Fatalf("/readyz %q", body)
	}
}

// The WebSocket gateway restarts: the sidecar reconnects by itself.
func TestE2ETransportWebSocketGatewayRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for tunnel recovery")
	}
	checkGoroutines(t)
	srv := startFly(t)
	t.Setenv(EnvTransport, "websocket")
	r, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), "twi-ollama.flycast:80")
	if err := srv.StopGateway(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "not ready while the gateway is down", func() bool { return !r.s.Ready() })
	if err := srv.StartGateway(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "ready again", r.s.Ready)
	if code, body := r.get(t, "http://"+addrs[0]+"/"); code != 200 || strings.TrimSpace(body) != "ok twi-ollama" {
		t.Fatalf("after restart: %d %q", code, body)
	}
	if v := r.metric(t, `glaceon_websocket_connects_total `); v == "" || v == "0" || v == "1" {
		t.Fatalf("websocket connects = %q, want a reconnection", v)
	}
}

// A gateway that sends bad frames gets its connection dropped and re-made;
// the tunnel then works.
func TestE2ETransportBadFramesFromGateway(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault flyapitest.WebSocketFault
		stage string
	}{
		{"oversized length", flyapitest.WSFaultOversized, "protocol"},
		{"binary message", flyapitest.WSFaultBinaryMessage, "protocol"},
		{"truncated frame", flyapitest.WSFaultTruncated, "read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			srv := startFly(t)
			t.Setenv(EnvTransport, "websocket")
			srv.SetWebSocketFault(tc.fault)
			r, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), "twi-ollama.flycast:80")
			if code, _ := r.get(t, "http://"+addrs[0]+"/"); code != 200 {
				t.Fatalf("GET = %d", code)
			}
			if v := r.metric(t, `glaceon_websocket_errors_total{stage="`+tc.stage+`"} `); v == "" || v == "0" {
				t.Fatalf("errors{stage=%s} = %q", tc.stage, v)
			}
			if st := srv.WebSocketStats(); st.Accepted < 2 {
				t.Fatalf("gateway accepted %d websockets, want a reconnection", st.Accepted)
			}
		})
	}
}

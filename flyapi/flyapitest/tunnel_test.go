package flyapitest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/glaceon/glaceon/flyapi/udpbind"
)

// wgClient is a userspace WireGuard client like the glaceon sidecar:
// wireguard-go + tun/netstack, local address = peerip, DNS = prefix48::3.
type wgClient struct {
	dev    *device.Device
	tnet   *netstack.Net
	peerIP netip.Addr
	dns    netip.Addr
	pub    []byte
	http   *http.Client
}

func newWGClient(t testing.TB, s *Server, org, name string) *wgClient {
	t.Helper()
	priv, pub := newKey(t)
	add := addPeer(t, s, org, name, pub)
	peerIP := netip.MustParseAddr(add["peerip"].(string))
	p48 := netip.PrefixFrom(peerIP, 48).Masked()
	d := p48.Addr().As16()
	d[15] = 3
	dns := netip.AddrFrom16(d)
	gwPub, err := b64dec(add["pubkey"].(string))
	if err != nil {
		t.Fatal(err)
	}
	// endpointip is a host name: resolve it (loopback) and pick one address.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", add["endpointip"].(string))
	if err != nil || len(ips) == 0 {
		t.Fatalf("resolve %v: %v", add["endpointip"], err)
	}
	ep := ips[0].Unmap()
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			ep = ip.Unmap()
		}
	}
	if !ep.IsLoopback() {
		t.Fatalf("endpoint %v is not loopback", ep)
	}
	tdev, tnet, err := netstack.CreateNetTUN([]netip.Addr{peerIP}, []netip.Addr{dns}, 1420)
	if err != nil {
		t.Fatal(err)
	}
	logger := &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	dev := device.NewDevice(tdev, udpbind.New(udpbind.Options{Loopback: true}), logger)
	uapi := fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=%s\nallowed_ip=%s\npersistent_keepalive_interval=15\n",
		hex.EncodeToString(priv), hex.EncodeToString(gwPub),
		net.JoinHostPort(ep.String(), strconv.Itoa(s.GatewayPort())), p48)
	if err := dev.IpcSet(uapi); err != nil {
		dev.Close()
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		t.Fatal(err)
	}
	c := &wgClient{dev: dev, tnet: tnet, peerIP: peerIP, dns: dns, pub: pub}
	c.http = &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{DialContext: tnet.DialContext, MaxIdleConnsPerHost: 4},
	}
	t.Cleanup(c.close)
	return c
}

func (c *wgClient) close() {
	c.http.Transport.(*http.Transport).CloseIdleConnections()
	c.dev.Close()
}

func b64dec(s string) ([]byte, error) {
	b, err := base64Std(s)
	if err == nil && len(b) != 32 {
		err = errors.New("key is not 32 bytes")
	}
	return b, err
}

func (c *wgClient) get(ctx context.Context, url string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return string(b), nil
}

// rawDNS sends one query to the org's DNS server through the tunnel.
func (c *wgClient) rawDNS(t testing.TB, network, name string, qtype dnsmessage.Type) *dnsmessage.Message {
	t.Helper()
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 4242, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: qtype, Class: dnsmessage.ClassINET}},
	}
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	server := netip.AddrPortFrom(c.dns, 53)
	var resp []byte
	switch network {
	case "udp":
		conn, err := c.tnet.DialUDPAddrPort(netip.AddrPort{}, server)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("udp dns %s: %v", name, err)
		}
		resp = buf[:n]
	case "tcp":
		conn, err := c.tnet.DialContextTCPAddrPort(ctx, server)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		out := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
		if _, err := conn.Write(append(out, b...)); err != nil {
			t.Fatal(err)
		}
		var l [2]byte
		if _, err := io.ReadFull(conn, l[:]); err != nil {
			t.Fatalf("tcp dns %s: %v", name, err)
		}
		resp = make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(conn, resp); err != nil {
			t.Fatal(err)
		}
	}
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		t.Fatal(err)
	}
	if m.ID != 4242 || !m.Response {
		t.Fatalf("bad DNS header %+v", m.Header)
	}
	return &m
}

func aaaa(m *dnsmessage.Message) []netip.Addr {
	var out []netip.Addr
	for _, a := range m.Answers {
		if r, ok := a.Body.(*dnsmessage.AAAAResource); ok {
			out = append(out, netip.AddrFrom16(r.AAAA))
		}
	}
	return out
}

func TestTunnelEndToEnd(t *testing.T) {
	s := Start(t, Options{})
	c := newWGClient(t, s, "personal", "k8s-e2e-client")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// DNS through the tunnel with the netstack resolver (AAAA only).
	addrs, err := c.tnet.LookupContextHost(ctx, "twi-ollama.flycast")
	if err != nil {
		t.Fatalf("lookup twi-ollama.flycast: %v", err)
	}
	if want := s.AppAddr("twi-ollama", "personal"); len(addrs) != 1 || addrs[0] != want.String() {
		t.Fatalf("twi-ollama.flycast = %v, want %v", addrs, want)
	}
	if !s.LastHandshake(b64(c.pub)).After(time.Now().Add(-time.Minute)) {
		t.Errorf("no handshake recorded by the gateway")
	}
	_, err = c.tnet.LookupContextHost(ctx, "nope.flycast")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("nope.flycast: %v, want NXDOMAIN", err)
	}

	// HTTP
	body, err := c.get(ctx, "http://twi-ollama.flycast/")
	if err != nil || body != "ok twi-ollama\n" {
		t.Fatalf("GET /: %q %v", body, err)
	}
	body, err = c.get(ctx, "http://db.internal/")
	if err != nil || body != "ok db\n" {
		t.Errorf("GET db.internal: %q %v", body, err)
	}

	// 8 MiB streamed, byte pattern checked
	const n = 8 << 20
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://twi-ollama.flycast/bytes?n="+strconv.Itoa(n), nil)
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	buf := make([]byte, 64<<10)
	bad := false
	for {
		k, err := resp.Body.Read(buf)
		for i := 0; i < k && !bad; i++ {
			if buf[i] != byte((got+int64(i))%251) {
				t.Errorf("byte %d = %d, want %d", got+int64(i), buf[i], (got+int64(i))%251)
				bad = true
			}
		}
		got += int64(k)
		if err != nil {
			if err != io.EOF {
				t.Fatalf("read /bytes after %d: %v", got, err)
			}
			break
		}
	}
	resp.Body.Close()
	if got != n || resp.ContentLength != n {
		t.Errorf("/bytes: got %d bytes (Content-Length %d), want %d", got, resp.ContentLength, n)
	}
	el := time.Since(start)
	t.Logf("8 MiB in %v (%.1f MiB/s)", el.Round(time.Millisecond), float64(n)/(1<<20)/el.Seconds())

	// /echo
	payload := make([]byte, 300<<10)
	rand.Read(payload)
	req, _ = http.NewRequestWithContext(ctx, "POST", "http://echo.flycast/echo", bytes.NewReader(payload))
	resp, err = c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	echoed, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(echoed, payload) {
		t.Errorf("/echo: %d bytes back, err %v", len(echoed), err)
	}

	// TCP echo on :7
	conn, err := c.tnet.DialContext(ctx, "tcp", "echo.flycast:7")
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	msg := make([]byte, 100<<10)
	rand.Read(msg)
	go func() { conn.Write(msg); conn.(interface{ CloseWrite() error }).CloseWrite() }()
	back, err := io.ReadAll(conn)
	conn.Close()
	if err != nil || !bytes.Equal(back, msg) {
		t.Errorf("echo :7: %d bytes back, err %v", len(back), err)
	}

	// Raw DNS over UDP and TCP.
	for _, network := range []string{"udp", "tcp"} {
		m := c.rawDNS(t, network, "twi-ollama.flycast.", dnsmessage.TypeAAAA)
		if m.RCode != dnsmessage.RCodeSuccess || fmt.Sprint(aaaa(m)) != fmt.Sprint([]netip.Addr{s.AppAddr("twi-ollama", "personal")}) {
			t.Errorf("%s AAAA: %v %v", network, m.RCode, aaaa(m))
		}
		m = c.rawDNS(t, network, "DB.Internal.", dnsmessage.TypeAAAA)
		if fmt.Sprint(aaaa(m)) != fmt.Sprint([]netip.Addr{s.AppInternalAddr("db", "personal")}) {
			t.Errorf("%s db.internal: %v", network, aaaa(m))
		}
		m = c.rawDNS(t, network, "_api.internal.", dnsmessage.TypeAAAA)
		if len(aaaa(m)) != 1 {
			t.Errorf("%s _api.internal: %v", network, m.RCode)
		}
		m = c.rawDNS(t, network, "k8s-e2e-client._peer.internal.", dnsmessage.TypeAAAA)
		if fmt.Sprint(aaaa(m)) != fmt.Sprint([]netip.Addr{c.peerIP}) {
			t.Errorf("%s _peer: %v", network, aaaa(m))
		}
		m = c.rawDNS(t, network, "twi-ollama.flycast.", dnsmessage.TypeA)
		if m.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 0 {
			t.Errorf("%s A: %v %d answers", network, m.RCode, len(m.Answers))
		}
		m = c.rawDNS(t, network, "nope.flycast.", dnsmessage.TypeAAAA)
		if m.RCode != dnsmessage.RCodeNameError {
			t.Errorf("%s nope: %v", network, m.RCode)
		}
		m = c.rawDNS(t, network, "example.com.", dnsmessage.TypeAAAA)
		if m.RCode != dnsmessage.RCodeNameError {
			t.Errorf("%s example.com: %v", network, m.RCode)
		}
	}

	// Org isolation: acme's addresses are not reachable from personal.
	ictx, icancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	_, err = c.tnet.DialContextTCPAddrPort(ictx, netip.AddrPortFrom(s.AppAddr("echo", "acme"), 7))
	icancel()
	if err == nil {
		t.Errorf("reached another org's network")
	}

	// A second peer in another org works at the same time.
	c2 := newWGClient(t, s, "acme", "k8s-e2e-acme")
	body, err = c2.get(ctx, "http://echo.flycast/")
	if err != nil || body != "ok echo\n" {
		t.Errorf("acme GET: %q %v", body, err)
	}
	if a, _ := c2.tnet.LookupContextHost(ctx, "echo.flycast"); len(a) != 1 || a[0] != s.AppAddr("echo", "acme").String() {
		t.Errorf("acme echo.flycast = %v", a)
	}

	// Removing the peer through the API cuts it off at the gateway.
	r := gql(t, s, s.Token(), qRemove, map[string]any{"input": map[string]any{"organizationId": s.OrgID("acme"), "name": "k8s-e2e-acme"}})
	mustOK(t, r)
	c2.http.Transport.(*http.Transport).CloseIdleConnections()
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := c2.get(rctx, "http://echo.flycast/"); err == nil {
		t.Errorf("removed peer still has access")
	}
	rcancel()
	if s.gw.peerCount() != 1 {
		t.Errorf("gateway peers = %d, want 1", s.gw.peerCount())
	}
}

func TestGatewayRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for wireguard-go's re-handshake (~15 s)")
	}
	s := Start(t, Options{})
	port := s.GatewayPort()
	c := newWGClient(t, s, "personal", "k8s-restart")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if body, err := c.get(ctx, "http://twi-ollama.flycast/"); err != nil || body != "ok twi-ollama\n" {
		t.Fatalf("before restart: %q %v", body, err)
	}
	// a long-lived TCP connection across the restart
	conn, err := c.tnet.DialContext(ctx, "tcp", "echo.flycast:7")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	if err := s.StopGateway(); err != nil {
		t.Fatal(err)
	}
	if err := s.StopGateway(); err == nil {
		t.Errorf("second StopGateway succeeded")
	}
	// a peer added while the gateway is down is installed on start
	_, pub := newKey(t)
	addPeer(t, s, "personal", "added-while-down", pub)
	sctx, scancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	if _, err := c.get(sctx, "http://twi-ollama.flycast/"); err == nil {
		t.Errorf("traffic flowed while the gateway was stopped")
	}
	scancel()
	if err := s.StartGateway(); err != nil {
		t.Fatal(err)
	}
	if s.GatewayPort() != port {
		t.Errorf("port changed %d -> %d", port, s.GatewayPort())
	}
	if n := s.gw.peerCount(); n != 2 {
		t.Errorf("gateway has %d peers after restart, want 2", n)
	}
	// wireguard-go re-handshakes ~15 s after its data stops being answered;
	// poll with fresh requests until traffic flows again.
	start := time.Now()
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		body, err := c.get(pctx, "http://twi-ollama.flycast/")
		pcancel()
		if err == nil && body == "ok twi-ollama\n" {
			break
		}
		if time.Since(start) > 45*time.Second {
			t.Fatalf("traffic did not resume within 45s: %v", err)
		}
		c.http.Transport.(*http.Transport).CloseIdleConnections()
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("traffic resumed %v after restart", time.Since(start).Round(time.Millisecond))
	// the TCP connection opened before the restart still works
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write([]byte("still there?")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 12)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "still there?" {
		t.Fatalf("echo across restart: %q %v", buf, err)
	}
	if !s.LastHandshake(b64(c.pub)).After(start) {
		t.Errorf("no new handshake after restart")
	}
}

func base64Std(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(s)
}

// ---- goroutine leak checks ----

var leakMarkers = []string{"gvisor.dev/gvisor", "golang.zx2c4.com/wireguard", "flyapi/flyapitest.", "net/http.(*Server).Serve", "net/http.(*conn).serve"}

func leakedGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "leakedGoroutines") || strings.Contains(g, "testing.(*M).") {
			continue
		}
		for _, m := range leakMarkers {
			if strings.Contains(g, m) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

func waitNoLeaks(d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		l := leakedGoroutines()
		if len(l) == 0 || time.Now().After(deadline) {
			return l
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCloseNoLeaks(t *testing.T) {
	if l := waitNoLeaks(5 * time.Second); len(l) > 0 {
		t.Fatalf("goroutines left by earlier tests:\n%s", strings.Join(l, "\n\n"))
	}
	before := runtime.NumGoroutine()
	s, err := NewServer(Options{})
	if err != nil {
		t.Fatal(err)
	}
	func() {
		c := newWGClient(t, s, "personal", "leak-check")
		defer c.close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if body, err := c.get(ctx, "http://twi-ollama.flycast/"); err != nil || body != "ok twi-ollama\n" {
			t.Fatalf("GET: %q %v", body, err)
		}
		conn, err := c.tnet.DialContext(ctx, "tcp", "echo.flycast:7") // left open on purpose
		if err != nil {
			t.Fatal(err)
		}
		_ = conn
		if err := s.StopGateway(); err != nil {
			t.Fatal(err)
		}
		if err := s.StartGateway(); err != nil {
			t.Fatal(err)
		}
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if l := waitNoLeaks(5 * time.Second); len(l) > 0 {
		t.Fatalf("%d goroutines leaked after Close:\n%s", len(l), strings.Join(l, "\n\n"))
	}
	if after := runtime.NumGoroutine(); after > before+2 {
		t.Errorf("goroutines: %d before, %d after", before, after)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if l := waitNoLeaks(5 * time.Second); len(l) > 0 {
			fmt.Fprintf(os.Stderr, "goroutines leaked by tests:\n%s\n", strings.Join(l, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

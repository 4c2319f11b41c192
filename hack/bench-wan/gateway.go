package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/hack/bench-wan/link"
)

// kernelGateway is the Fly side of the benchmark: wireguard-go on a real
// TUN device (with its TSO/GRO offloads) whose interface lives in the
// network namespace the script made, with the org's 6PN addresses on it,
// so that the apps behind it are served by Linux TCP from kernel sockets.
// Its WireGuard UDP socket stays on loopback in the root namespace (the
// device is created there and then moved, as with kernel WireGuard in a
// namespace). Peers come from the API double (flyapitest), like the
// double's own gateway.
type kernelGateway struct {
	ns     string // name under /run/netns
	ifName string
	cc     string // the apps' TCP congestion control ("" = the namespace's)
	pub    [32]byte

	tun    tun.Device
	dev    *device.Device
	tr     *flyapitest.GatewayTransport // UDP bind and wss listener
	port   int                          // UDP, 127.0.0.1
	wsPort int                          // WireGuard over WebSocket (TLS), 127.0.0.1

	apps      map[netip.Addr]string
	names     map[string]netip.Addr // DNS: fully qualified name -> address
	httpSrv   *http.Server
	closers   []io.Closer
	conns     sync.Map // *net.TCPConn -> *connInfo, the apps' open connections
	gen       atomic.Int64
	discarded atomic.Int64
	// perStream counts /discard bytes by the X-Bench-Stream header, to find
	// upload streams that stalled.
	perStream [maxStreams]atomic.Int64
}

const maxStreams = 256

// connInfo is what TCP_INFO showed of one app connection: the largest
// windows seen and the smallest RTT.
type connInfo struct {
	gen                                     int64 // the cell that opened it
	maxSndWnd, maxRcvWnd, minRTTus, retrans atomic.Uint32
}

// nsSysctls make sure the Linux side never caps a stream: buffers well
// above 200 Mbit/s × 100 ms.
var nsSysctls = map[string]string{
	"net/ipv4/tcp_rmem": "4096 131072 33554432",
	"net/ipv4/tcp_wmem": "4096 16384 33554432",
}

// setGatewayCC makes cc the Linux side's TCP congestion control, after
// checking that this kernel has it. A new namespace inherits the host's
// default (BBR on some machines, CUBIC on most) and may only switch to the
// host's allowed ones, so the gateway sets it on the sample apps' listening
// socket instead, which root may give any algorithm the kernel has;
// accepted connections inherit it.
func (h *harness) setGatewayCC(cc string) error {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		return fmt.Errorf("-gateway-cc: %w", err)
	}
	if !slices.Contains(strings.Fields(string(b)), cc) {
		return fmt.Errorf("-gateway-cc %q: this kernel has %s (load the tcp_%s module or pick one of those)", cc, strings.TrimSpace(string(b)), cc)
	}
	h.gatewayCC = cc
	return nil
}

// withCongestion sets TCP congestion control cc on a socket before it
// binds; "" leaves the namespace's default.
func withCongestion(cc string) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		if cc == "" {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("TCP_CONGESTION %s: %w", cc, serr)
		}
		return nil
	}
}

func newKernelGateway(ns, ifName, cc string, srv *flyapitest.Server, org string) (g *kernelGateway, err error) {
	g = &kernelGateway{ns: ns, ifName: ifName, cc: cc, apps: map[netip.Addr]string{}, names: map[string]netip.Addr{}}
	// The error returns set g to nil: close what this one made.
	made := g
	defer func() {
		if err != nil {
			made.close()
		}
	}()
	var priv [32]byte
	if _, err := rand.Read(priv[:]); err != nil {
		return nil, err
	}
	priv[0] &= 248
	priv[31] = (priv[31] & 127) | 64
	pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		return nil, err
	}
	copy(g.pub[:], pub)

	if g.tun, err = tun.CreateTUN(ifName, 1420); err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", ifName, err)
	}
	prefix := srv.OrgPrefix(org)
	a16 := prefix.Addr().As16()
	a16[15] = 1
	gwAddr := netip.AddrFrom16(a16)
	dnsAddr := srv.DNSAddr(org)
	cmds := [][]string{
		{"link", "set", "dev", ifName, "netns", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "-6", "addr", "add", netip.PrefixFrom(gwAddr, 48).String(), "dev", ifName, "nodad"},
		{"-n", ns, "-6", "addr", "add", dnsAddr.String() + "/128", "dev", ifName, "nodad"},
	}
	g.names["_api.internal."] = gwAddr
	for _, app := range srv.Apps() {
		for suffix, a := range map[string]netip.Addr{".flycast.": srv.AppAddr(app, org), ".internal.": srv.AppInternalAddr(app, org)} {
			g.apps[a] = app
			g.names[app+suffix] = a
			cmds = append(cmds, []string{"-n", ns, "-6", "addr", "add", a.String() + "/128", "dev", ifName, "nodad"})
		}
	}
	cmds = append(cmds, []string{"-n", ns, "link", "set", ifName, "up"})
	for _, c := range cmds {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	if err := g.inNetns(func() error {
		for k, v := range nsSysctls {
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("sysctls in %s: %w", ns, err)
	}

	// The double's gateway transport: the same loopback UDP bind as
	// before, plus the WebSocket endpoint flyctl's framing reaches
	// (flyapi/wgws), so one device serves both transports.
	if g.tr, err = flyapitest.NewGatewayTransport(); err != nil {
		return nil, fmt.Errorf("gateway transport: %w", err)
	}
	g.wsPort = g.tr.WebSocketPort()
	g.dev = device.NewDevice(g.tun, g.tr.Bind(), &device.Logger{
		Verbosef: device.DiscardLogf,
		// The MTU lookups by name fail once the device is in the namespace
		// (harmless: the MTU is set before the move).
		Errorf: func(f string, a ...any) {
			if s := fmt.Sprintf(f, a...); !strings.Contains(s, "MTU") {
				fmt.Fprintln(os.Stderr, "bench-wan: gateway:", s)
			}
		},
	})
	if err := g.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(priv[:]))); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	if err := g.dev.Up(); err != nil {
		return nil, fmt.Errorf("gateway up: %w", err)
	}
	if g.port = g.tr.UDPPort(); g.port == 0 {
		return nil, errors.New("gateway bind did not open")
	}
	if err := g.startServices(dnsAddr); err != nil {
		return nil, err
	}
	return g, nil
}

// inNetns runs fn on an OS thread switched into the benchmark namespace;
// sockets fn opens stay in it.
func (g *kernelGateway) inNetns(fn func() error) error { return link.InNetns(g.ns, fn) }

// PublicKey is the gateway's key in standard base64.
func (g *kernelGateway) PublicKey() string { return base64.StdEncoding.EncodeToString(g.pub[:]) }

// addPeer installs a peer the API double created, the way the double's own
// gateway does: its key, and its /120 as allowed IPs.
func (g *kernelGateway) addPeer(p flyapitest.PeerState) error {
	key, err := base64.StdEncoding.DecodeString(p.PublicKey)
	if err != nil {
		return err
	}
	return g.dev.IpcSet(fmt.Sprintf("public_key=%s\nallowed_ip=%s\n", hex.EncodeToString(key), netip.PrefixFrom(p.PeerIP, 120).Masked()))
}

func (g *kernelGateway) close() {
	if g.httpSrv != nil {
		g.httpSrv.Close()
	}
	for _, c := range g.closers {
		c.Close()
	}
	if g.tr != nil {
		g.tr.Close() // the WebSockets; the device closes the bind
	}
	if g.dev != nil {
		g.dev.Close() // closes the TUN too; the interface goes with it
	} else if g.tun != nil {
		g.tun.Close()
	}
}

func (g *kernelGateway) startServices(dnsAddr netip.Addr) error {
	var hl net.Listener
	var dc net.PacketConn
	err := g.inNetns(func() error {
		var err error
		lc := net.ListenConfig{Control: withCongestion(g.cc)}
		if hl, err = lc.Listen(context.Background(), "tcp6", "[::]:80"); err != nil {
			return err
		}
		if dc, err = net.ListenPacket("udp6", netip.AddrPortFrom(dnsAddr, 53).String()); err != nil {
			hl.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("listen in %s: %w", g.ns, err)
	}
	g.closers = append(g.closers, hl, dc)
	g.httpSrv = &http.Server{Handler: http.HandlerFunc(g.serveApp), ReadHeaderTimeout: 30 * time.Second,
		ConnState: func(c net.Conn, s http.ConnState) {
			tc, ok := c.(*net.TCPConn)
			if !ok {
				return
			}
			switch s {
			case http.StateNew:
				ci := &connInfo{gen: g.gen.Load()}
				ci.minRTTus.Store(^uint32(0))
				g.conns.Store(tc, ci)
			case http.StateClosed, http.StateHijacked:
				g.conns.Delete(tc)
			}
		}}
	go g.httpSrv.Serve(hl)
	go g.serveDNS(dc)
	return nil
}

// sampleConns reads TCP_INFO of every open app connection into its connInfo.
func (g *kernelGateway) sampleConns() {
	g.conns.Range(func(k, v any) bool {
		tc, ci := k.(*net.TCPConn), v.(*connInfo)
		sc, err := tc.SyscallConn()
		if err != nil {
			return true
		}
		_ = sc.Control(func(fd uintptr) {
			ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				return
			}
			storeMax(&ci.maxSndWnd, ti.Snd_wnd)
			storeMax(&ci.maxRcvWnd, ti.Rcv_wnd)
			storeMax(&ci.retrans, ti.Total_retrans)
			if ti.Min_rtt > 0 && ti.Min_rtt < ci.minRTTus.Load() {
				ci.minRTTus.Store(ti.Min_rtt)
			}
		})
		return true
	})
}

// storeMax raises a to v; a compare-and-swap, since the cell's goroutine and
// the sampler may both sample at the end of a cell.
func storeMax[T uint32 | int64](a interface {
	Load() T
	CompareAndSwap(old, new T) bool
}, v T) {
	for {
		if old := a.Load(); v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// newGeneration starts counting connections for a new cell.
func (g *kernelGateway) newGeneration() int64 {
	for i := range g.perStream {
		g.perStream[i].Store(0)
	}
	return g.gen.Add(1)
}

// windows sums, over the app connections opened in generation gen, the largest window the
// proxy advertised (snd_wnd at the Linux sender: downloads) and the
// largest Linux advertised (rcv_wnd: uploads), and gives the smallest RTT.
func (g *kernelGateway) windows(gen int64) (snd, rcv int64, minRTT time.Duration, retrans int64, n int) {
	minRTT = -1
	g.conns.Range(func(_, v any) bool {
		ci := v.(*connInfo)
		if ci.gen != gen {
			return true
		}
		snd += int64(ci.maxSndWnd.Load())
		rcv += int64(ci.maxRcvWnd.Load())
		retrans += int64(ci.retrans.Load())
		if r := ci.minRTTus.Load(); r != ^uint32(0) {
			d := time.Duration(r) * time.Microsecond
			if minRTT < 0 || d < minRTT {
				minRTT = d
			}
		}
		n++
		return true
	})
	return
}

// serveApp serves the sample apps of flyapitest ("/", "/bytes?n=",
// "/echo") plus "/discard", which reads the request body and answers its
// length (uploads without a download riding along).
func (g *kernelGateway) serveApp(w http.ResponseWriter, r *http.Request) {
	app := "plain"
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ta, ok := la.(*net.TCPAddr); ok {
			a, _ := netip.AddrFromSlice(ta.IP)
			if name, ok := g.apps[a.Unmap()]; ok {
				app = name
			}
		}
	}
	switch r.URL.Path {
	case "/discard":
		buf := make([]byte, 64<<10)
		var total int64
		var per *atomic.Int64
		if i, err := strconv.Atoi(r.Header.Get("X-Bench-Stream")); err == nil && i >= 0 && i < maxStreams {
			per = &g.perStream[i]
		}
		for {
			n, err := r.Body.Read(buf)
			total += int64(n)
			g.discarded.Add(int64(n))
			if per != nil {
				per.Add(int64(n))
			}
			if err != nil {
				break
			}
		}
		fmt.Fprintf(w, "%d\n", total)
	default:
		flyapitest.SampleApp(w, r, app)
	}
}

// serveDNS answers AAAA for the app names, _api.internal (the sidecar's
// health probe) and nothing else (NXDOMAIN), like the double's Fly DNS.
func (g *kernelGateway) serveDNS(c net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		resp := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
		addr, known := g.names[strings.ToLower(q.Name.String())]
		if !known {
			resp.RCode = dnsmessage.RCodeNameError
		}
		b := dnsmessage.NewBuilder(nil, resp)
		b.EnableCompression()
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		if known && q.Type == dnsmessage.TypeAAAA {
			_ = b.AAAAResource(dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AAAAResource{AAAA: addr.As16()})
		}
		out, err := b.Finish()
		if err == nil {
			_, _ = c.WriteTo(out, from)
		}
	}
}

// plainServer serves the same handler on 127.0.0.1 in the root namespace:
// the "plain loopback" reference for small requests.
func (g *kernelGateway) plainServer(ctx context.Context) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	s := &http.Server{Handler: http.HandlerFunc(g.serveApp)}
	go s.Serve(ln)
	go func() { <-ctx.Done(); s.Close() }()
	return "http://" + ln.Addr().String(), nil
}

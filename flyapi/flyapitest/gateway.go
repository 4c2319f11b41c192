package flyapitest

import (
	"bufio"
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
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// currentBind is the running device's bind (nil while stopped).
func (g *gateway) currentBind() *gwBind {
	g.devMu.Lock()
	defer g.devMu.Unlock()
	return g.bind
}

// gatewayPubFallback is returned as pubkey when the gateway is disabled.
const gatewayPubFallback = "Zmx5YXBpdGVzdC1nYXRld2F5LWRpc2FibGVkLWtleSE="

const (
	gatewayMTU    = 1420
	gatewayQueue  = 4096 // outbound packets buffered between netstack and WireGuard
	nicID         = 1
	maxBytesParam = 8 << 30
)

// gateway is the fake Fly WireGuard gateway: a wireguard-go device whose
// TUN side is a gVisor netstack that owns, per org network, the gateway
// address <prefix48>::1, the DNS server <prefix48>::3 and every app address.
// The netstack lives as long as the Server; the WireGuard device can be
// stopped and started again (StopGateway/StartGateway).
type gateway struct {
	s         *Server
	priv, pub [32]byte
	port      int

	st *stack.Stack
	ep *channel.Endpoint

	dev  *device.Device // nil while stopped; guarded by s.mu (and devMu for readers)
	tun  *gwTun
	bind *gwBind
	ws   *wsGateway // WireGuard over WebSocket (websocket.go)

	devMu sync.Mutex // guards dev for readers that do not hold s.mu

	apps   map[netip.Addr]string // flycast and internal address -> app
	appSrv *http.Server

	closers []io.Closer
	wg      sync.WaitGroup
}

func newGateway(s *Server) (g *gateway, err error) {
	g = &gateway{s: s, port: s.opts.GatewayPort, apps: map[netip.Addr]string{}}
	if _, err := rand.Read(g.priv[:]); err != nil {
		return nil, err
	}
	g.priv[0] &= 248
	g.priv[31] = (g.priv[31] & 127) | 64
	pub, err := curve25519.X25519(g.priv[:], curve25519.Basepoint)
	if err != nil {
		return nil, err
	}
	copy(g.pub[:], pub)

	g.st = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol6},
	})
	built := g // the named result is nil on the error paths
	defer func() {
		if err != nil {
			built.close()
		}
	}()
	opts := []tcpip.SettableTransportProtocolOption{}
	sack := tcpip.TCPSACKEnabled(true)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 4 << 20}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 4 << 20}
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	cc := tcpip.CongestionControlOption("cubic")
	// gVisor backs retransmissions off up to 120 s: after a burst of
	// losses (100 parallel streams through wireguard-go's bounded queues on
	// a loaded machine) a stream then stalled for minutes. Fly's gateways
	// are Linux; for a loopback double a 1 s cap is plenty.
	maxRTO := tcpip.TCPMaxRTOOption(time.Second)
	// RACK off, as in the sidecar: after a burst of drops gVisor's RACK can
	// hold a sender in SACK recovery at two segments per RTO for minutes
	// (its pipe counts the segments RACK marked lost, docs/stall.md). The
	// senders behind Fly's gateway are Linux, which does not do that; with
	// RACK on, this double stalled TestE2EParallelDownloads.
	rack := tcpip.TCPRecovery(0)
	opts = append(opts, &sack, &rcv, &snd, &mod, &cc, &maxRTO, &rack)
	for _, o := range opts {
		if terr := g.st.SetTransportProtocolOption(tcp.ProtocolNumber, o); terr != nil {
			return nil, fmt.Errorf("flyapitest: gateway netstack option %T: %v", o, terr)
		}
	}
	g.ep = channel.New(gatewayQueue, gatewayMTU, "")
	if terr := g.st.CreateNIC(nicID, g.ep); terr != nil {
		return nil, fmt.Errorf("flyapitest: gateway CreateNIC: %v", terr)
	}
	addAddr := func(a netip.Addr) error {
		pa := tcpip.ProtocolAddress{Protocol: ipv6.ProtocolNumber, AddressWithPrefix: tcpip.AddrFrom16(a.As16()).WithPrefix()}
		if terr := g.st.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); terr != nil {
			return fmt.Errorf("flyapitest: gateway address %s: %v", a, terr)
		}
		return nil
	}
	for _, o := range s.orgs {
		for _, a := range []netip.Addr{addrIn(o.prefix, 0, 0, 0, 0, 1), addrIn(o.prefix, 0, 0, 0, 0, 3)} {
			if err := addAddr(a); err != nil {
				return nil, err
			}
		}
		for i, app := range s.opts.Apps {
			for _, a := range []netip.Addr{flycastAddr(o.prefix, i), internalAddr(o.prefix, i)} {
				if err := addAddr(a); err != nil {
					return nil, err
				}
				g.apps[a] = app
			}
		}
	}
	g.st.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})

	if err := g.startServices(); err != nil {
		return nil, err
	}
	if g.ws, err = newWSGateway(g, s.opts.WebSocketPort); err != nil {
		return nil, err
	}
	if err := g.startDevice(nil); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *gateway) logf(format string, args ...any) { g.s.logf("flyapitest: gateway: "+format, args...) }

// ---- WireGuard device ----

func (g *gateway) startDevice(peers []*peerRec) error {
	g.devMu.Lock()
	defer g.devMu.Unlock()
	if g.dev != nil {
		return errors.New("flyapitest: gateway already running")
	}
	t := newGwTun(g.ep)
	t.drop = &g.s.blackholed
	b := newGwBind(g.ws)
	logger := &device.Logger{
		Verbosef: device.DiscardLogf,
		Errorf: func(format string, args ...any) {
			if g.s.opts.Logf != nil {
				g.logf(format, args...)
			}
		},
	}
	dev := device.NewDevice(t, b, logger)
	var sb strings.Builder
	fmt.Fprintf(&sb, "private_key=%s\nlisten_port=%d\n", hex.EncodeToString(g.priv[:]), g.port)
	for _, p := range peers {
		writePeerUAPI(&sb, p)
	}
	if err := dev.IpcSet(sb.String()); err != nil {
		dev.Close()
		return fmt.Errorf("flyapitest: gateway config: %w", err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return fmt.Errorf("flyapitest: gateway up on UDP port %d: %w", g.port, err)
	}
	port := b.LocalPort()
	if port == 0 {
		dev.Close()
		return errors.New("flyapitest: gateway bind did not open")
	}
	g.port = port
	if err := g.ws.start(); err != nil {
		dev.Close()
		return err
	}
	g.dev, g.tun, g.bind = dev, t, b
	g.logf("up on udp 127.0.0.1:%d and wss 127.0.0.1:%d with %d peers", port, g.ws.port, len(peers))
	return nil
}

func (g *gateway) stopDevice() error {
	g.devMu.Lock()
	dev := g.dev
	g.dev, g.tun, g.bind = nil, nil, nil
	g.devMu.Unlock()
	if dev == nil {
		return errors.New("flyapitest: gateway not running")
	}
	g.ws.stop()
	dev.Close()
	g.ep.Drain()
	g.logf("stopped")
	return nil
}

func writePeerUAPI(sb *strings.Builder, p *peerRec) {
	key, _ := base64.StdEncoding.DecodeString(p.PublicKey)
	fmt.Fprintf(sb, "public_key=%s\nallowed_ip=%s\n", hex.EncodeToString(key), netip.PrefixFrom(p.PeerIP, 120).Masked())
}

func (g *gateway) addPeer(p *peerRec) error {
	g.devMu.Lock()
	defer g.devMu.Unlock()
	if g.dev == nil {
		return nil // installed by StartGateway
	}
	var sb strings.Builder
	writePeerUAPI(&sb, p)
	return g.dev.IpcSet(sb.String())
}

func (g *gateway) removePeer(p *peerRec) error {
	g.devMu.Lock()
	defer g.devMu.Unlock()
	if g.dev == nil {
		return nil
	}
	key, _ := base64.StdEncoding.DecodeString(p.PublicKey)
	return g.dev.IpcSet(fmt.Sprintf("public_key=%s\nremove=true\n", hex.EncodeToString(key)))
}

func (g *gateway) lastHandshake(pubB64 string) time.Time {
	key, err := base64.StdEncoding.DecodeString(pubB64)
	if err != nil {
		return time.Time{}
	}
	g.devMu.Lock()
	dev := g.dev
	var cfg string
	if dev != nil {
		cfg, err = dev.IpcGet()
	}
	g.devMu.Unlock()
	if dev == nil || err != nil {
		return time.Time{}
	}
	want := "public_key=" + hex.EncodeToString(key)
	in := false
	var sec, nsec int64
	sc := bufio.NewScanner(strings.NewReader(cfg))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "public_key=") {
			in = line == want
			continue
		}
		if !in {
			continue
		}
		if v, ok := strings.CutPrefix(line, "last_handshake_time_sec="); ok {
			sec, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "last_handshake_time_nsec="); ok {
			nsec, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if sec == 0 && nsec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, nsec)
}

func (g *gateway) close() error {
	g.devMu.Lock()
	dev := g.dev
	g.dev = nil
	g.devMu.Unlock()
	if g.ws != nil {
		g.ws.stop()
	}
	if dev != nil {
		dev.Close()
	}
	if g.appSrv != nil {
		g.appSrv.Close()
	}
	for _, c := range g.closers {
		c.Close()
	}
	g.st.Close()
	g.wg.Wait()
	g.st.Wait()
	if g.ep != nil {
		g.ep.Close()
		g.ep.Drain()
	}
	return nil
}

// ---- TUN side: packets between wireguard-go and the netstack ----

type gwTun struct {
	ep        *channel.Endpoint
	ctx       context.Context
	cancel    context.CancelFunc
	events    chan tun.Event
	closeOnce sync.Once
	drop      *blackholes
}

const gwTunBatch = 128

func newGwTun(ep *channel.Endpoint) *gwTun {
	ctx, cancel := context.WithCancel(context.Background())
	t := &gwTun{ep: ep, ctx: ctx, cancel: cancel, events: make(chan tun.Event, 1)}
	t.events <- tun.EventUp
	return t
}

func (t *gwTun) File() *os.File           { return nil }
func (t *gwTun) MTU() (int, error)        { return gatewayMTU, nil }
func (t *gwTun) Name() (string, error)    { return "flyapitest-gw", nil }
func (t *gwTun) Events() <-chan tun.Event { return t.events }
func (t *gwTun) BatchSize() int           { return gwTunBatch }

func (t *gwTun) Close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		close(t.events)
	})
	return nil
}

// Read blocks for one outbound packet of the netstack, then takes whatever
// else is already queued, up to len(bufs).
func (t *gwTun) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkt := t.ep.ReadContext(t.ctx)
	if pkt == nil {
		return 0, os.ErrClosed
	}
	n := 0
	for pkt != nil {
		dst := bufs[n][offset:]
		size := 0
		if pkt.Size() <= len(dst) {
			for _, sl := range pkt.AsSlices() {
				size += copy(dst[size:], sl)
			}
		}
		pkt.DecRef()
		if size > 0 && t.drop != nil && t.drop.drops(dst[:size]) {
			size = 0
		}
		if size > 0 {
			sizes[n] = size
			n++
		}
		if n == len(bufs) {
			break
		}
		pkt = t.ep.Read()
	}
	return n, nil
}

// Write hands packets decrypted by wireguard-go to the netstack. Packets
// that cross org networks are dropped: each org is its own 6PN.
func (t *gwTun) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		p := b[offset:]
		if len(p) < header.IPv6MinimumSize || p[0]>>4 != 6 {
			continue
		}
		if string(p[8:14]) != string(p[24:30]) {
			continue
		}
		if t.drop != nil && t.drop.drops(p) {
			continue
		}
		pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		t.ep.InjectInbound(header.IPv6ProtocolNumber, pkb)
		pkb.DecRef()
	}
	return len(bufs), nil
}

// ---- services inside the netstack ----

func (g *gateway) startServices() error {
	// DNS at <prefix48>::3:53, UDP and TCP, per org.
	for _, o := range g.s.orgs {
		o := o
		dnsAddr := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom16(addrIn(o.prefix, 0, 0, 0, 0, 3).As16()), Port: 53}
		uc, err := gonet.DialUDP(g.st, &dnsAddr, nil, ipv6.ProtocolNumber)
		if err != nil {
			return fmt.Errorf("flyapitest: gateway DNS udp: %v", err)
		}
		g.closers = append(g.closers, uc)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.serveDNSUDP(o, uc)
		}()
		tl, err := gonet.ListenTCP(g.st, dnsAddr, ipv6.ProtocolNumber)
		if err != nil {
			return fmt.Errorf("flyapitest: gateway DNS tcp: %v", err)
		}
		g.closers = append(g.closers, tl)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.acceptLoop(tl, func(c net.Conn) { g.serveDNSTCP(o, c) })
		}()
	}

	// Apps: HTTP on 80 and TCP echo on 7, on every address (the handler
	// tells apps apart by the local address).
	hl, err := gonet.ListenTCP(g.st, tcpip.FullAddress{NIC: nicID, Port: 80}, ipv6.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("flyapitest: gateway listen :80: %v", err)
	}
	g.closers = append(g.closers, hl)
	g.appSrv = &http.Server{
		Handler:           http.HandlerFunc(g.serveApp),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          nil,
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		_ = g.appSrv.Serve(hl)
	}()
	el, err := gonet.ListenTCP(g.st, tcpip.FullAddress{NIC: nicID, Port: 7}, ipv6.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("flyapitest: gateway listen :7: %v", err)
	}
	g.closers = append(g.closers, el)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.acceptLoop(el, serveEcho)
	}()
	return nil
}

func (g *gateway) acceptLoop(l net.Listener, handle func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer c.Close()
			handle(c)
		}()
	}
}

func serveEcho(c net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if cw, ok := c.(interface{ CloseWrite() error }); ok && errors.Is(err, io.EOF) {
				_ = cw.CloseWrite()
			}
			return
		}
	}
}

func (g *gateway) serveApp(w http.ResponseWriter, r *http.Request) {
	var local netip.Addr
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ta, ok := la.(*net.TCPAddr); ok {
			local, _ = netip.AddrFromSlice(ta.IP)
			local = local.Unmap()
		}
	}
	app, ok := g.apps[local]
	w.Header().Set("Server", "flyapitest")
	if !ok {
		http.Error(w, "no app listens on "+local.String(), http.StatusNotFound)
		return
	}
	w.Header().Set("Fly-App", app)
	SampleApp(w, r, app)
}

// peerCount is the number of peers configured in the running device (-1 if
// stopped).
func (g *gateway) peerCount() int {
	g.devMu.Lock()
	defer g.devMu.Unlock()
	if g.dev == nil {
		return -1
	}
	cfg, err := g.dev.IpcGet()
	if err != nil {
		return -1
	}
	return strings.Count(cfg, "public_key=")
}

package flyapitest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/glaceon/glaceon/flyapi/udpbind"
	"github.com/glaceon/glaceon/flyapi/wgws"
)

// EnvWebSocketPort is read when Options.WebSocketPort is 0, like
// FLY_WG_GATEWAY_PORT for UDP.
const EnvWebSocketPort = "FLY_WG_WEBSOCKET_PORT"

// WebSocketFault makes the gateway misbehave on the next WebSocket it
// accepts, to test clients.
type WebSocketFault int

// WebSocket faults.
const (
	WSFaultNone          WebSocketFault = iota
	WSFaultOversized                    // a frame header announcing 1 MiB
	WSFaultBinaryMessage                // a binary message instead of text
	WSFaultTruncated                    // part of a frame, then the connection closes
)

// WebSocketStats counts what the gateway's WebSocket side saw.
type WebSocketStats struct {
	Accepted     int      // upgrades that sent the magic
	Rejected     int      // bad Origin, no magic, bad frames
	Active       int      // open now
	DatagramsIn  int      // WireGuard datagrams received over WebSockets
	DatagramsOut int      // and sent
	UDPDropped   int      // UDP datagrams dropped while UDP was blocked
	Origins      []string // Origin headers of accepted connections, distinct
}

// wsGateway is the WebSocket side of the gateway: an HTTPS server with a
// self-signed certificate on a loopback TCP port; each connection is one
// WireGuard endpoint of the gateway's bind.
type wsGateway struct {
	logf func(format string, args ...any)
	bind func() *gwBind // the running device's bind, nil while stopped
	port int
	cert tls.Certificate

	blockUDP atomic.Bool
	fault    atomic.Int32

	accepted, rejected, dgIn, dgOut, udpDropped atomic.Int64

	mu      sync.Mutex
	ln      net.Listener
	srv     *http.Server
	conns   map[*wgws.Conn]struct{}
	origins []string
	wg      sync.WaitGroup
}

func newWSGateway(g *gateway, port int) (*wsGateway, error) {
	if port == 0 {
		if v := os.Getenv(EnvWebSocketPort); v != "" {
			p, err := strconv.Atoi(v)
			if err != nil || p <= 0 || p > 65535 {
				return nil, fmt.Errorf("flyapitest: bad %s %q", EnvWebSocketPort, v)
			}
			port = p
		}
	}
	cert, err := selfSigned()
	if err != nil {
		return nil, err
	}
	return &wsGateway{logf: g.logf, bind: g.currentBind, port: port, cert: cert, conns: map[*wgws.Conn]struct{}{}}, nil
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "flyapitest gateway"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// start listens on 127.0.0.1:port, or [::1]:port where there is no IPv4
// loopback (the same port after a restart).
func (w *wsGateway) start() error {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(w.port)))
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		// An IPv6-only namespace: no 127.0.0.1.
		ln, err = net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(w.port)))
	}
	if err != nil {
		return fmt.Errorf("flyapitest: gateway websocket listen on port %d: %w", w.port, err)
	}
	w.port = ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{
		Handler:           http.HandlerFunc(w.serve),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{w.cert}, NextProtos: []string{"http/1.1"}},
		ErrorLog:          nil,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				if cc, ok := tc.NetConn().(*wgws.CorkConn); ok {
					return context.WithValue(ctx, corkKey{}, cc)
				}
			}
			return ctx
		},
	}
	w.mu.Lock()
	w.ln, w.srv = ln, srv
	w.mu.Unlock()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		_ = srv.Serve(tls.NewListener(corkListener{ln}, srv.TLSConfig))
	}()
	return nil
}

// stop closes the listener and every connection, like a gateway restart.
func (w *wsGateway) stop() {
	w.mu.Lock()
	srv := w.srv
	w.srv, w.ln = nil, nil
	conns := w.conns
	w.conns = map[*wgws.Conn]struct{}{}
	w.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
	for c := range conns {
		c.Close()
	}
	w.wg.Wait()
}

func (w *wsGateway) stats() WebSocketStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WebSocketStats{
		Accepted: int(w.accepted.Load()), Rejected: int(w.rejected.Load()), Active: len(w.conns),
		DatagramsIn: int(w.dgIn.Load()), DatagramsOut: int(w.dgOut.Load()), UDPDropped: int(w.udpDropped.Load()),
		Origins: append([]string(nil), w.origins...),
	}
}

// serve upgrades a request, as Fly's gateway does for flyctl: Origin must
// be the wss URL of the host asked for, then the magic, then frames.
func (w *wsGateway) serve(rw http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if u, err := url.Parse(origin); err != nil || u.Scheme != "wss" || !strings.EqualFold(u.Host, r.Host) {
		w.rejected.Add(1)
		w.logf("websocket rejected: Origin %q does not match host %q", origin, r.Host)
		http.Error(rw, "Origin must be wss://<host>/", http.StatusForbidden)
		return
	}
	cork, _ := r.Context().Value(corkKey{}).(*wgws.CorkConn)
	c, err := wgws.Accept(rw, r, &websocket.AcceptOptions{InsecureSkipVerify: true}, cork)
	if err != nil {
		w.rejected.Add(1)
		w.logf("websocket rejected: %v", err)
		return
	}
	w.mu.Lock()
	if w.srv == nil { // stopping
		w.mu.Unlock()
		c.Close()
		return
	}
	w.conns[c] = struct{}{}
	seen := false
	for _, o := range w.origins {
		seen = seen || o == origin
	}
	if !seen {
		w.origins = append(w.origins, origin)
	}
	w.mu.Unlock()
	w.accepted.Add(1)
	defer func() {
		w.mu.Lock()
		delete(w.conns, c)
		w.mu.Unlock()
		c.Close()
	}()
	if f := WebSocketFault(w.fault.Swap(int32(WSFaultNone))); f != WSFaultNone {
		w.injectFault(c, f)
		return
	}
	ep := &gwWSEndpoint{c: c, w: w}
	buf := make([]byte, wgws.MaxDatagram)
	for {
		n, err := c.ReadDatagram(buf)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				w.logf("websocket closed: %v", err)
			}
			return
		}
		w.dgIn.Add(1)
		b := w.bind()
		if b == nil {
			continue // gateway stopped: drop
		}
		b.deliver(buf[:n], ep)
	}
}

func (w *wsGateway) injectFault(c *wgws.Conn, f WebSocketFault) {
	switch f {
	case WSFaultOversized:
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], 1<<20)
		_ = c.WriteRaw(hdr[:])
	case WSFaultBinaryMessage:
		_ = c.WriteBinary(wgws.AppendFrame(nil, make([]byte, 148)))
	case WSFaultTruncated:
		_ = c.WriteRaw(wgws.AppendFrame(nil, make([]byte, 148))[:40])
		return // and close: the client sees the stream end inside a frame
	}
	// Hold the connection until the client drops it.
	select {
	case <-c.Done():
	case <-time.After(30 * time.Second):
	}
}

// gwWSEndpoint is a client reached over one WebSocket.
type gwWSEndpoint struct {
	c *wgws.Conn
	w *wsGateway
}

func (e *gwWSEndpoint) ClearSrc()           {}
func (e *gwWSEndpoint) SrcToString() string { return "" }
func (e *gwWSEndpoint) DstToString() string { return fmt.Sprintf("websocket-%p", e.c) }
func (e *gwWSEndpoint) DstToBytes() []byte  { return []byte(e.DstToString()) }
func (e *gwWSEndpoint) DstIP() netip.Addr   { return netip.Addr{} }
func (e *gwWSEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

// gwBind is the gateway's conn.Bind: the loopback UDP bind plus every
// WebSocket; UDP datagrams are dropped both ways while UDP is blocked.
type gwBind struct {
	udp *udpbind.Bind
	w   *wsGateway

	mu   sync.Mutex
	in   chan wsDatagram
	done chan struct{}
	pool sync.Pool
}

type wsDatagram struct {
	buf *[]byte
	n   int
	ep  *gwWSEndpoint
}

const gwWSQueue = 1024

func newGwBind(w *wsGateway) *gwBind {
	b := &gwBind{udp: udpbind.New(udpbind.Options{Loopback: true}), w: w}
	b.pool.New = func() any { s := make([]byte, 2048); return &s }
	return b
}

func (b *gwBind) deliver(p []byte, ep *gwWSEndpoint) {
	b.mu.Lock()
	in, done := b.in, b.done
	b.mu.Unlock()
	if in == nil {
		return
	}
	bp := b.pool.Get().(*[]byte)
	if len(p) > cap(*bp) {
		s := make([]byte, len(p))
		bp = &s
	}
	*bp = (*bp)[:cap(*bp)]
	n := copy(*bp, p)
	select {
	case in <- wsDatagram{buf: bp, n: n, ep: ep}:
	case <-done:
	}
}

func (b *gwBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.udp.Open(port)
	if err != nil {
		return nil, 0, err
	}
	in, done := make(chan wsDatagram, gwWSQueue), make(chan struct{})
	b.mu.Lock()
	b.in, b.done = in, done
	b.mu.Unlock()
	out := make([]conn.ReceiveFunc, 0, len(fns)+1)
	for _, fn := range fns {
		out = append(out, func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			n, err := fn(bufs, sizes, eps)
			if n > 0 && b.w.blockUDP.Load() {
				for i := 0; i < n; i++ {
					sizes[i] = 0 // wireguard-go skips runts
				}
				b.w.udpDropped.Add(int64(n))
			}
			return n, err
		})
	}
	out = append(out, func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		var d wsDatagram
		select {
		case d = <-in:
		case <-done:
			return 0, net.ErrClosed
		}
		n := 0
		for {
			sizes[n] = copy(bufs[n], (*d.buf)[:d.n])
			eps[n] = d.ep
			n++
			b.pool.Put(d.buf)
			if n == len(bufs) {
				return n, nil
			}
			select {
			case d = <-in:
			default:
				return n, nil
			}
		}
	})
	return out, actual, nil
}

func (b *gwBind) Close() error {
	b.mu.Lock()
	if b.done != nil {
		close(b.done)
		b.in, b.done = nil, nil
	}
	b.mu.Unlock()
	return b.udp.Close()
}

func (b *gwBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if e, ok := ep.(*gwWSEndpoint); ok {
		n, err := e.c.WriteBatch(bufs)
		b.w.dgOut.Add(int64(n))
		if err != nil {
			e.c.Fail(wgws.ErrWrite, err) // the client re-dials
		}
		return nil
	}
	if b.w.blockUDP.Load() {
		b.w.udpDropped.Add(int64(len(bufs)))
		return nil
	}
	return b.udp.Send(bufs, ep)
}

func (b *gwBind) ParseEndpoint(s string) (conn.Endpoint, error) { return b.udp.ParseEndpoint(s) }
func (b *gwBind) BatchSize() int                                { return b.udp.BatchSize() }
func (b *gwBind) SetMark(m uint32) error                        { return b.udp.SetMark(m) }
func (b *gwBind) LocalPort() int                                { return b.udp.LocalPort() }

var _ conn.Bind = (*gwBind)(nil)

// WebSocketPort is the gateway's WebSocket (wss) port on 127.0.0.1, 0 when
// the gateway is disabled.
func (s *Server) WebSocketPort() int {
	if s.gw == nil {
		return 0
	}
	return s.gw.ws.port
}

// BlockUDP drops every WireGuard datagram that does not come through a
// WebSocket, both ways, from now on (false lets UDP through again), like
// egress that allows only TCP 443. It survives gateway restarts.
func (s *Server) BlockUDP(block bool) {
	if s.gw != nil {
		s.gw.ws.blockUDP.Store(block)
		s.logf("flyapitest: gateway: udp blocked=%v", block)
	}
}

// UDPBlocked reports the BlockUDP switch.
func (s *Server) UDPBlocked() bool { return s.gw != nil && s.gw.ws.blockUDP.Load() }

// SetWebSocketFault makes the next accepted WebSocket misbehave once.
func (s *Server) SetWebSocketFault(f WebSocketFault) {
	if s.gw != nil {
		s.gw.ws.fault.Store(int32(f))
	}
}

// WebSocketStats reports what the gateway's WebSocket side saw.
func (s *Server) WebSocketStats() WebSocketStats {
	if s.gw == nil {
		return WebSocketStats{}
	}
	return s.gw.ws.stats()
}

type corkKey struct{}

// corkListener hands out corkable TCP connections (see wgws.CorkConn).
type corkListener struct{ net.Listener }

func (l corkListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return wgws.NewCorkConn(c), nil
}

// GatewayTransport is the double gateway's transport for a wireguard-go
// device of one's own (hack/bench-wan's gateway on a real TUN device): the
// loopback UDP bind and the wss listener on 127.0.0.1, with the same
// Origin check, framing (flyapi/wgws) and corked writes as the double's
// gateway. Give Bind to device.NewDevice; Close after the device.
type GatewayTransport struct {
	ws   *wsGateway
	bind *gwBind
}

// NewGatewayTransport listens for WebSockets on an ephemeral port of
// 127.0.0.1; the UDP port opens with the device (Bind().Open).
func NewGatewayTransport() (*GatewayTransport, error) {
	cert, err := selfSigned()
	if err != nil {
		return nil, err
	}
	w := &wsGateway{logf: func(string, ...any) {}, cert: cert, conns: map[*wgws.Conn]struct{}{}}
	b := newGwBind(w)
	w.bind = func() *gwBind { return b }
	if err := w.start(); err != nil {
		return nil, err
	}
	return &GatewayTransport{ws: w, bind: b}, nil
}

// Bind is the conn.Bind for the device.
func (t *GatewayTransport) Bind() conn.Bind { return t.bind }

// UDPPort is the bind's UDP port on 127.0.0.1 once the device is up.
func (t *GatewayTransport) UDPPort() int { return t.bind.LocalPort() }

// WebSocketPort is the wss port on 127.0.0.1.
func (t *GatewayTransport) WebSocketPort() int { return t.ws.port }

// WebSocketStats counts what the WebSocket side saw.
func (t *GatewayTransport) WebSocketStats() WebSocketStats { return t.ws.stats() }

// Close stops the listener and every WebSocket (the device closes the bind).
func (t *GatewayTransport) Close() { t.ws.stop() }

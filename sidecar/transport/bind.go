// Package transport carries WireGuard datagrams to the Fly gateway over UDP
// or, where UDP is blocked, over a WebSocket (flyapi/wgws), behind one
// wireguard-go conn.Bind. The WireGuard session does not know which path a
// datagram took: switching paths keeps keys and counters, so TCP
// connections inside the tunnel survive a switch.
package transport

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/glaceon/glaceon/flyapi/wgws"
)

// Path is how datagrams reach the gateway.
type Path int32

// Paths.
const (
	PathUDP Path = iota
	PathWebSocket
	numPaths
)

func (p Path) String() string {
	if p == PathWebSocket {
		return "websocket"
	}
	return "udp"
}

// WireGuard message types and sizes (the first byte of a datagram,
// little-endian type; see the WireGuard whitepaper, section 5.4).
const (
	msgInitiation     = 1
	msgResponse       = 2
	msgInitiationSize = 148
	msgResponseSize   = 92
)

func isInitiation(b []byte) bool {
	return len(b) == msgInitiationSize && b[0] == msgInitiation && b[1] == 0 && b[2] == 0 && b[3] == 0
}

func isResponse(b []byte) bool {
	return len(b) == msgResponseSize && b[0] == msgResponse && b[1] == 0 && b[2] == 0 && b[3] == 0
}

// Reconnect backoff for the WebSocket.
const (
	wsBackoffMin = 500 * time.Millisecond
	wsBackoffMax = 30 * time.Second
	// wsStableAfter: a connection that lived this long resets the backoff.
	wsStableAfter = 10 * time.Second
	// initiationFresh: a handshake initiation younger than this is sent
	// again on a new path (wireguard-go waits 5 s before a retry).
	initiationFresh = 5 * time.Second
)

// UDP is the UDP bind underneath (flyapi/udpbind).
type UDP interface {
	conn.Bind
}

// Options configures a Bind.
type Options struct {
	UDP  UDP
	Dial wgws.DialOptions // URL must be set for the WebSocket path
	Log  logr.Logger
	// DialFunc replaces wgws.Dial (tests).
	DialFunc func(ctx context.Context, o wgws.DialOptions) (*wgws.Conn, error)
}

// Stats are cumulative counters, safe to read at any time.
type Stats struct {
	FramesOut, FramesIn [numPaths]atomic.Uint64
	BytesOut, BytesIn   [numPaths]atomic.Uint64
	Dropped             atomic.Uint64 // datagrams for the WebSocket while it was down
	WSConnects          atomic.Uint64
	WSErrors            [wgws.NumErrorKinds]atomic.Uint64
}

// Bind is a conn.Bind that sends every datagram over the current Path and
// receives from both. wireguard-go sees one gateway endpoint; which path
// carries it is the Bind's business, so a switch keeps the session.
type Bind struct {
	opts  Options
	Stats Stats

	path    atomic.Int32
	probing atomic.Bool
	probeOK atomic.Bool

	lastOut [numPaths]atomic.Int64 // unix nanos
	wsUp    atomic.Int64           // unix nanos a WebSocket was last up
	// funcs and waiting count the receive functions per path and those
	// blocked waiting for a datagram (not handing one to wireguard-go).
	funcs, waiting [numPaths]atomic.Int32
	lastIn         [numPaths]atomic.Int64

	udpTarget atomic.Pointer[conn.Endpoint] // last UDP endpoint from UAPI
	wsEP      wsEndpoint

	initMu  sync.Mutex
	initPkt []byte
	initAt  time.Time

	mu       sync.Mutex
	open     chan struct{} // nil when closed; closed by Close
	wsCancel context.CancelFunc
	wsDone   chan struct{}
	cur      *wgws.Conn
	curCh    chan struct{} // closed when cur changes
}

// New returns a closed Bind on PathUDP.
func New(o Options) *Bind {
	if o.DialFunc == nil {
		o.DialFunc = wgws.Dial
	}
	b := &Bind{opts: o, curCh: make(chan struct{})}
	b.wsEP = wsEndpoint{url: o.Dial.URL}
	return b
}

// wsEndpoint is the gateway reached over the WebSocket.
type wsEndpoint struct{ url string }

func (e wsEndpoint) ClearSrc()           {}
func (e wsEndpoint) SrcToString() string { return "" }
func (e wsEndpoint) DstToString() string { return e.url }
func (e wsEndpoint) DstToBytes() []byte  { return []byte(e.url) }
func (e wsEndpoint) DstIP() netip.Addr   { return netip.Addr{} }
func (e wsEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

// Path is the path datagrams go out on.
func (b *Bind) Path() Path { return Path(b.path.Load()) }

// LastIn is when a datagram last arrived over p (zero if never).
func (b *Bind) LastIn(p Path) time.Time { return unixNano(b.lastIn[p].Load()) }

// LastOut is when a datagram last went out over p (zero if never).
func (b *Bind) LastOut(p Path) time.Time { return unixNano(b.lastOut[p].Load()) }

func unixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Idle reports whether every receive function of p is waiting for a
// datagram. When one is not, wireguard-go (or the netstack behind it) is
// slow to take what arrived: silence on p then says nothing about the path.
func (b *Bind) Idle(p Path) bool {
	n := b.funcs[p].Load()
	return n > 0 && b.waiting[p].Load() == n
}

// HasUDPTarget reports whether a UDP endpoint was configured.
func (b *Bind) HasUDPTarget() bool { return b.udpTarget.Load() != nil }

// WebSocketConnected reports whether a WebSocket is up.
func (b *Bind) WebSocketConnected() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cur != nil
}

// SetPath moves outgoing datagrams to p. On the WebSocket path a connection
// is kept up (re-dialled with backoff); leaving it closes the connection.
func (b *Bind) SetPath(p Path) {
	b.path.Store(int32(p))
	b.lastIn[p].Store(time.Now().UnixNano()) // a fresh path gets time to answer
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open == nil {
		return // Open starts what the path needs
	}
	if p == PathWebSocket {
		b.startWSLocked()
	} else {
		b.stopWSLocked()
		if pkt := b.freshInitiation(); pkt != nil {
			_ = b.sendUDP([][]byte{pkt}, nil)
		}
	}
}

// WebSocketUpAt is when a WebSocket was last connected (now, if one is).
func (b *Bind) WebSocketUpAt() time.Time {
	if b.WebSocketConnected() {
		return time.Now()
	}
	return unixNano(b.wsUp.Load())
}

// ResetWebSocket drops the current WebSocket (it is re-dialled): for a
// connection that stopped delivering without an error.
func (b *Bind) ResetWebSocket(why error) {
	b.mu.Lock()
	c := b.cur
	b.mu.Unlock()
	if c != nil {
		c.Fail(wgws.ErrIdle, why)
	}
}

// StartProbe sends handshake initiations over UDP alone, whatever the path,
// until StopProbe; ProbeSucceeded reports a handshake response that came
// back over UDP since.
func (b *Bind) StartProbe() {
	b.probeOK.Store(false)
	b.probing.Store(true)
}

// StopProbe ends a probe.
func (b *Bind) StopProbe() { b.probing.Store(false) }

// ProbeSucceeded: a handshake response arrived over UDP during the probe.
func (b *Bind) ProbeSucceeded() bool { return b.probeOK.Load() }

// Open opens the UDP bind and a receive function for the WebSocket.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.opts.UDP.Open(port)
	if err != nil {
		return nil, 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open != nil {
		_ = b.opts.UDP.Close()
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	open := make(chan struct{})
	b.open = open
	out := make([]conn.ReceiveFunc, 0, len(fns)+1)
	for _, fn := range fns {
		out = append(out, b.counted(PathUDP, b.wrapUDP(fn)))
	}
	out = append(out, b.counted(PathWebSocket, b.receiveWS(open)))
	if b.Path() == PathWebSocket {
		b.startWSLocked()
	}
	return out, actual, nil
}

// Close closes the UDP bind and the WebSocket; wireguard-go may Open again.
func (b *Bind) Close() error {
	err := b.opts.UDP.Close()
	b.mu.Lock()
	if b.open != nil {
		close(b.open)
		b.open = nil
	}
	b.stopWSLocked()
	b.mu.Unlock()
	return err
}

// counted keeps funcs and waiting up to date for fn.
func (b *Bind) counted(p Path, fn conn.ReceiveFunc) conn.ReceiveFunc {
	b.funcs[p].Add(1)
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		b.waiting[p].Add(1)
		n, err := fn(bufs, sizes, eps)
		b.waiting[p].Add(-1)
		if err != nil {
			// wireguard-go stops calling a function that failed (the bind
			// is closing).
			b.funcs[p].Add(-1)
		}
		return n, err
	}
}

func (b *Bind) wrapUDP(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(bufs, sizes, eps)
		if n > 0 {
			var bytes uint64
			for i := 0; i < n; i++ {
				bytes += uint64(sizes[i])
				if b.probing.Load() && isResponse(bufs[i][:sizes[i]]) {
					b.probeOK.Store(true)
				}
			}
			b.Stats.FramesIn[PathUDP].Add(uint64(n))
			b.Stats.BytesIn[PathUDP].Add(bytes)
			b.lastIn[PathUDP].Store(time.Now().UnixNano())
		}
		return n, err
	}
}

// receiveWS reads from whichever WebSocket is current; it returns only when
// the Bind is closed.
func (b *Bind) receiveWS(open chan struct{}) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for {
			b.mu.Lock()
			c, ch := b.cur, b.curCh
			b.mu.Unlock()
			if c == nil {
				select {
				case <-ch:
					continue
				case <-open:
					return 0, net.ErrClosed
				}
			}
			n, err := c.ReadBatch(bufs, sizes)
			if err != nil {
				c.Fail(readErrorKind(err), err)
				select {
				case <-open:
					return 0, net.ErrClosed
				case <-ch: // the dialler replaced or dropped it
				}
				continue
			}
			var bytes uint64
			for i := 0; i < n; i++ {
				eps[i] = b.wsEP
				bytes += uint64(sizes[i])
			}
			b.Stats.FramesIn[PathWebSocket].Add(uint64(n))
			b.Stats.BytesIn[PathWebSocket].Add(bytes)
			b.lastIn[PathWebSocket].Store(time.Now().UnixNano())
			return n, nil
		}
	}
}

func readErrorKind(err error) wgws.ErrorKind {
	if errors.Is(err, wgws.ErrFrameTooLarge) || errors.Is(err, wgws.ErrWrongMessageType) || strings.Contains(err.Error(), "does not fit") {
		return wgws.ErrProtocol
	}
	return wgws.ErrRead
}

// ParseEndpoint accepts the UDP gateway address (IP:port) or the WebSocket
// URL (wss://…), which stands for the gateway when no UDP address is known.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if strings.HasPrefix(s, "wss://") {
		return b.wsEP, nil
	}
	ep, err := b.opts.UDP.ParseEndpoint(s)
	if err != nil {
		return nil, err
	}
	b.udpTarget.Store(&ep)
	return ep, nil
}

// Send writes bufs over the current path. A handshake initiation is
// remembered so that a new path can carry it at once; while probing,
// initiations go over UDP only.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	for _, p := range bufs {
		if isInitiation(p) {
			b.initMu.Lock()
			b.initPkt = append(b.initPkt[:0], p...)
			b.initAt = time.Now()
			b.initMu.Unlock()
		}
	}
	if b.Path() == PathUDP {
		return b.sendUDP(bufs, ep)
	}
	if b.probing.Load() {
		var rest [][]byte
		for i, p := range bufs {
			if isInitiation(p) {
				if rest == nil {
					rest = append(make([][]byte, 0, len(bufs)), bufs[:i]...)
				}
				_ = b.sendUDP([][]byte{p}, nil)
			} else if rest != nil {
				rest = append(rest, p)
			}
		}
		if rest != nil {
			bufs = rest
		}
	}
	return b.sendWS(bufs)
}

func (b *Bind) sendUDP(bufs [][]byte, ep conn.Endpoint) error {
	if _, ws := ep.(wsEndpoint); ws || ep == nil {
		t := b.udpTarget.Load()
		if t == nil {
			b.Stats.Dropped.Add(uint64(len(bufs)))
			return nil
		}
		ep = *t
	}
	if err := b.opts.UDP.Send(bufs, ep); err != nil {
		return err
	}
	var bytes uint64
	for _, p := range bufs {
		bytes += uint64(len(p))
	}
	b.Stats.FramesOut[PathUDP].Add(uint64(len(bufs)))
	b.Stats.BytesOut[PathUDP].Add(bytes)
	b.lastOut[PathUDP].Store(time.Now().UnixNano())
	return nil
}

func (b *Bind) sendWS(bufs [][]byte) error {
	if len(bufs) == 0 {
		return nil
	}
	b.mu.Lock()
	c := b.cur
	b.mu.Unlock()
	if c == nil {
		// Connecting: drop, as a congested UDP path would; WireGuard and
		// TCP inside recover. An error here would only make wireguard-go log.
		b.Stats.Dropped.Add(uint64(len(bufs)))
		return nil
	}
	n, err := c.WriteBatch(bufs)
	if err != nil {
		c.Fail(wgws.ErrWrite, err)
		b.Stats.Dropped.Add(uint64(len(bufs) - n))
	}
	var bytes uint64
	for _, p := range bufs[:n] {
		bytes += uint64(len(p))
	}
	b.Stats.FramesOut[PathWebSocket].Add(uint64(n))
	b.Stats.BytesOut[PathWebSocket].Add(bytes)
	b.lastOut[PathWebSocket].Store(time.Now().UnixNano())
	return nil
}

func (b *Bind) startWSLocked() {
	if b.wsCancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.wsCancel, b.wsDone = cancel, done
	go func() { defer close(done); b.runWS(ctx) }()
}

// stopWSLocked stops the dialler and waits for it (it never takes b.mu
// while ctx is cancelled and it is blocked).
func (b *Bind) stopWSLocked() {
	if b.wsCancel == nil {
		return
	}
	b.wsCancel()
	done := b.wsDone
	b.wsCancel, b.wsDone = nil, nil
	b.mu.Unlock()
	<-done
	b.mu.Lock()
}

func (b *Bind) setConn(c *wgws.Conn) {
	b.wsUp.Store(time.Now().UnixNano())
	b.mu.Lock()
	b.cur = c
	close(b.curCh)
	b.curCh = make(chan struct{})
	b.mu.Unlock()
}

// runWS keeps one WebSocket up until ctx ends, re-dialling with jittered
// exponential backoff.
func (b *Bind) runWS(ctx context.Context) {
	log := b.opts.Log
	backoff := wsBackoffMin
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		c, err := b.opts.DialFunc(dctx, b.opts.Dial)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			b.Stats.WSErrors[wgws.ErrDial].Add(1)
			wait := jitter(backoff)
			log.Info("websocket connect failed; retrying", "url", b.opts.Dial.URL, "error", err.Error(), "retryIn", wait.String())
			if !sleep(ctx, wait) {
				return
			}
			backoff = min(backoff*2, wsBackoffMax)
			continue
		}
		b.Stats.WSConnects.Add(1)
		log.Info("websocket connected", "url", b.opts.Dial.URL)
		go c.KeepAlive()
		b.setConn(c)
		b.resendInitiation(c)
		since := time.Now()
		select {
		case <-ctx.Done():
		case <-c.Done():
		}
		b.setConn(nil)
		c.Close()
		if ctx.Err() != nil {
			return
		}
		kind, err := c.Err()
		if err != nil && kind >= 0 {
			b.Stats.WSErrors[kind].Add(1)
		}
		if time.Since(since) >= wsStableAfter {
			backoff = wsBackoffMin
		}
		wait := jitter(backoff)
		msg := "<nil>"
		if err != nil {
			msg = err.Error()
		}
		log.Info("websocket dropped; reconnecting", "url", b.opts.Dial.URL, "reason", kind.String(), "error", msg, "retryIn", wait.String())
		if !sleep(ctx, wait) {
			return
		}
		backoff = min(backoff*2, wsBackoffMax)
	}
}

// resendInitiation sends a recent handshake initiation again over c: it
// was probably lost on the path we just left, and wireguard-go would
// otherwise wait up to 5 s to retry.
func (b *Bind) resendInitiation(c *wgws.Conn) {
	if p := b.freshInitiation(); p != nil {
		_ = b.sendWS([][]byte{p})
	}
}

// freshInitiation is a copy of the last handshake initiation if it is
// recent enough to be worth sending again, else nil.
func (b *Bind) freshInitiation() []byte {
	b.initMu.Lock()
	defer b.initMu.Unlock()
	if b.initAt.IsZero() || time.Since(b.initAt) >= initiationFresh {
		return nil
	}
	return append([]byte(nil), b.initPkt...)
}

// jitter returns d ± 20 %.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// BatchSize is the UDP bind's batch size.
func (b *Bind) BatchSize() int { return b.opts.UDP.BatchSize() }

// SetMark passes through to the UDP bind.
func (b *Bind) SetMark(m uint32) error { return b.opts.UDP.SetMark(m) }

var _ conn.Bind = (*Bind)(nil)

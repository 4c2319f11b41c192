// Package udpbind is a wireguard-go conn.Bind for Linux that reads and
// writes batches with recvmmsg/sendmmsg: the UDP transport of WireGuard to
// Fly's gateways (port 51820).
//
// Both ends use it: the sidecar as the client, and the test double's
// gateway (flyapi/flyapitest, in loopback-only mode). It lives in the flyapi
// tree, next to the other Fly formats, so that the double does not import
// the sidecar and the sidecar does not import the double or the API client;
// it depends on wireguard-go and x/net, x/sys only.
package udpbind

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// Bind is a conn.Bind for Linux that reads and writes batches with
// recvmmsg/sendmmsg and does not turn on UDP GRO.
//
// Why not conn.StdNetBind: with UDP GRO on, StdNetBind reads only 2 (possibly
// coalesced) datagrams per recvmmsg and resets 128 message headers per call.
// Datagrams that arrive uncoalesced (loopback, most pod veths, a kernel
// WireGuard gateway sending one datagram per packet) then cost a syscall per
// 2 packets; measured on loopback this bind reads tens per call. See
// docs/benchmarks.md.
type Bind struct {
	loopback bool

	mu  sync.Mutex
	c4  *net.UDPConn
	c6  *net.UDPConn
	p4  *ipv4.PacketConn
	p6  *ipv6.PacketConn
	txs sync.Pool // *[]ipv6.Message
}

const (
	// bindBatchSize datagrams per recvmmsg/sendmmsg. wireguard-go keeps
	// BatchSize message buffers of 64 KiB per receive socket allocated for
	// good (they count as live heap for the GC), so this is also a memory
	// knob; see docs/benchmarks.md.
	bindBatchSize = 32
	bindSocketBuf = 7 << 20 // asked for; without CAP_NET_ADMIN the kernel caps it at rmem_max/wmem_max
)

// Options configures a Bind.
type Options struct {
	// Loopback binds 127.0.0.1 and ::1 only and refuses every other peer
	// address: for test gateways, which must never send traffic elsewhere.
	Loopback bool
}

// New returns a closed Bind; wireguard-go opens it.
func New(opts Options) *Bind {
	b := &Bind{loopback: opts.Loopback}
	b.txs.New = func() any {
		m := make([]ipv6.Message, bindBatchSize)
		for i := range m {
			m[i].Buffers = make([][]byte, 1)
		}
		return &m
	}
	return b
}

// bindEndpoint is an immutable destination (we never pin the source).
type bindEndpoint struct {
	ap netip.AddrPort
}

func (e *bindEndpoint) ClearSrc()           {}
func (e *bindEndpoint) SrcToString() string { return "" }
func (e *bindEndpoint) DstToString() string { return e.ap.String() }
func (e *bindEndpoint) DstToBytes() []byte  { b, _ := e.ap.MarshalBinary(); return b }
func (e *bindEndpoint) DstIP() netip.Addr   { return e.ap.Addr() }
func (e *bindEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

// ParseEndpoint parses an IP:port endpoint.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if b.loopback && !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("udp bind: loopback only, not %s", ap)
	}
	return &bindEndpoint{ap: ap}, nil
}

// BatchSize is the number of datagrams per read and write call.
func (b *Bind) BatchSize() int { return bindBatchSize }

// SetMark does nothing: no fwmark in userspace-only use.
func (b *Bind) SetMark(uint32) error { return nil }

// LocalPort is the UDP port the bind listens on, 0 when closed.
func (b *Bind) LocalPort() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range []*net.UDPConn{b.c4, b.c6} {
		if c != nil {
			return c.LocalAddr().(*net.UDPAddr).Port
		}
	}
	return 0
}

func (b *Bind) listenUDP(network string, port uint16) (*net.UDPConn, error) {
	addr := &net.UDPAddr{Port: int(port)}
	if b.loopback && network == "udp4" {
		addr.IP = net.IPv4(127, 0, 0, 1)
	} else if b.loopback {
		addr.IP = net.IPv6loopback
	}
	c, err := net.ListenUDP(network, addr)
	if err != nil {
		return nil, err
	}
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bindSocketBuf) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, bindSocketBuf)
			}
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bindSocketBuf) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, bindSocketBuf)
			}
		})
	}
	return c, nil
}

// Open listens on port (0: any) on IPv4 and IPv6, where available.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c4 != nil || b.c6 != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	var (
		c4, c6 *net.UDPConn
		err    error
	)
	// Same port on both families; with port 0, retry if v6 has it taken.
	for try := 0; try < 10; try++ {
		c4, err = b.listenUDP("udp4", port)
		// No IPv4 at all, or (loopback mode) no 127.0.0.1 in an IPv6-only
		// namespace: IPv6 alone will do.
		if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) && !(b.loopback && errors.Is(err, syscall.EADDRNOTAVAIL)) {
			return nil, 0, err
		}
		actual := port
		if c4 != nil {
			actual = uint16(c4.LocalAddr().(*net.UDPAddr).Port)
		}
		c6, err = b.listenUDP("udp6", actual)
		if err == nil || c4 == nil || port != 0 || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		_ = c4.Close()
		c4 = nil
	}
	if c6 == nil && c4 == nil {
		return nil, 0, errors.New("udp bind: no IPv4 or IPv6 socket")
	}
	var fns []conn.ReceiveFunc
	var actual uint16
	if c4 != nil {
		p4 := ipv4.NewPacketConn(c4)
		b.c4, b.p4 = c4, p4
		actual = uint16(c4.LocalAddr().(*net.UDPAddr).Port)
		fns = append(fns, makeReceive(func(ms []ipv6.Message) (int, error) { return p4.ReadBatch(ms, 0) }))
	}
	if c6 != nil {
		p6 := ipv6.NewPacketConn(c6)
		b.c6, b.p6 = c6, p6
		actual = uint16(c6.LocalAddr().(*net.UDPAddr).Port)
		fns = append(fns, makeReceive(func(ms []ipv6.Message) (int, error) { return p6.ReadBatch(ms, 0) }))
	}
	return fns, actual, nil
}

// makeReceive returns a ReceiveFunc with its own message headers: each
// ReceiveFunc is called by a single goroutine.
func makeReceive(read func([]ipv6.Message) (int, error)) conn.ReceiveFunc {
	msgs := make([]ipv6.Message, bindBatchSize)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
	}
	var last *bindEndpoint
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n := min(len(bufs), len(msgs))
		for i := 0; i < n; i++ {
			msgs[i].Buffers[0] = bufs[i]
		}
		got, err := read(msgs[:n])
		if err != nil {
			return 0, err
		}
		for i := 0; i < got; i++ {
			m := &msgs[i]
			sizes[i] = m.N
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				sizes[i] = 0
				continue
			}
			ap := ua.AddrPort()
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			// Almost every datagram comes from the one gateway: reuse its
			// endpoint instead of allocating one per packet.
			if last == nil || last.ap != ap {
				last = &bindEndpoint{ap: ap}
			}
			eps[i] = last
			m.Buffers[0] = nil
			m.Addr = nil
		}
		return got, nil
	}
}

// Send writes bufs to ep in batches.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*bindEndpoint)
	if !ok || (b.loopback && !e.ap.Addr().IsLoopback()) {
		return conn.ErrWrongEndpointType
	}
	b.mu.Lock()
	p4, p6 := b.p4, b.p6
	b.mu.Unlock()
	addr := net.UDPAddrFromAddrPort(e.ap)
	var write func([]ipv6.Message) (int, error)
	switch {
	case e.ap.Addr().Is4() && p4 != nil:
		write = func(ms []ipv6.Message) (int, error) { return p4.WriteBatch(ms, 0) }
	case e.ap.Addr().Is6() && p6 != nil:
		write = func(ms []ipv6.Message) (int, error) { return p6.WriteBatch(ms, 0) }
	default:
		return syscall.EAFNOSUPPORT
	}
	mp := b.txs.Get().(*[]ipv6.Message)
	defer b.txs.Put(mp)
	msgs := *mp
	for len(bufs) > 0 {
		n := min(len(bufs), len(msgs))
		for i := 0; i < n; i++ {
			msgs[i].Buffers[0] = bufs[i]
			msgs[i].Addr = addr
		}
		sent := 0
		for sent < n {
			k, err := write(msgs[sent:n])
			if err != nil {
				clearMsgs(msgs[:n])
				return err
			}
			sent += k
		}
		clearMsgs(msgs[:n])
		bufs = bufs[n:]
	}
	return nil
}

func clearMsgs(ms []ipv6.Message) {
	for i := range ms {
		ms[i].Buffers[0] = nil
		ms[i].Addr = nil
	}
}

// Close closes both sockets; wireguard-go may Open the bind again.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var err error
	if b.c4 != nil {
		err = b.c4.Close()
	}
	if b.c6 != nil {
		if e := b.c6.Close(); err == nil {
			err = e
		}
	}
	b.c4, b.c6, b.p4, b.p6 = nil, nil, nil, nil
	return err
}

var _ conn.Bind = (*Bind)(nil)

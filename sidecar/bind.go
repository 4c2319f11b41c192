package sidecar

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// udpBind is a conn.Bind for Linux that reads and writes batches with
// recvmmsg/sendmmsg and does not turn on UDP GRO.
//
// Why not conn.StdNetBind: with UDP GRO on, StdNetBind reads only 2 (possibly
// coalesced) datagrams per recvmmsg and resets 128 message headers per call.
// Datagrams that arrive uncoalesced (loopback, most pod veths, a kernel
// WireGuard gateway sending one datagram per packet) then cost a syscall per
// 2 packets; measured on loopback this bind reads tens per call. See
// docs/benchmarks.md.
type udpBind struct {
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
	bindSocketBuf = 4 << 20 // asked for; the kernel caps it at rmem_max/wmem_max
)

func newUDPBind() *udpBind {
	b := &udpBind{}
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

func (b *udpBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &bindEndpoint{ap: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

func (b *udpBind) BatchSize() int       { return bindBatchSize }
func (b *udpBind) SetMark(uint32) error { return nil }

func listenUDP(network string, port uint16) (*net.UDPConn, error) {
	c, err := net.ListenUDP(network, &net.UDPAddr{Port: int(port)})
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

func (b *udpBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
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
		c4, err = listenUDP("udp4", port)
		if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
			return nil, 0, err
		}
		actual := port
		if c4 != nil {
			actual = uint16(c4.LocalAddr().(*net.UDPAddr).Port)
		}
		c6, err = listenUDP("udp6", actual)
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

func (b *udpBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*bindEndpoint)
	if !ok {
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

func (b *udpBind) Close() error {
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

var _ conn.Bind = (*udpBind)(nil)

package flyapitest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/conn"
)

// loopBind is a wireguard-go conn.Bind that listens on 127.0.0.1 and ::1
// only (conn.StdNetBind binds the wildcard address) and talks only to
// loopback endpoints. It uses recvmmsg/sendmmsg batches through x/net.
type loopBind struct {
	logf func(string, ...any)

	mu sync.Mutex
	c4 *net.UDPConn
	p4 *ipv4.PacketConn
	c6 *net.UDPConn
	p6 *ipv6.PacketConn

	pool4 sync.Pool
	pool6 sync.Pool
}

const (
	bindBatch        = conn.IdealBatchSize
	socketBufferSize = 7 << 20
)

func newLoopBind(logf func(string, ...any)) *loopBind {
	b := &loopBind{logf: logf}
	b.pool4.New = func() any {
		ms := make([]ipv4.Message, bindBatch)
		for i := range ms {
			ms[i].Buffers = make([][]byte, 1)
		}
		return &ms
	}
	b.pool6.New = func() any {
		ms := make([]ipv6.Message, bindBatch)
		for i := range ms {
			ms[i].Buffers = make([][]byte, 1)
		}
		return &ms
	}
	return b
}

type loopEndpoint struct{ ap netip.AddrPort }

func (e *loopEndpoint) ClearSrc()           {}
func (e *loopEndpoint) SrcToString() string { return "" }
func (e *loopEndpoint) DstToString() string { return e.ap.String() }
func (e *loopEndpoint) DstToBytes() []byte  { b, _ := e.ap.MarshalBinary(); return b }
func (e *loopEndpoint) DstIP() netip.Addr   { return e.ap.Addr() }
func (e *loopEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

func (b *loopBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c4 != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	var c4, c6 *net.UDPConn
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		c4, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
		if err != nil {
			return nil, 0, err
		}
		actual := c4.LocalAddr().(*net.UDPAddr).Port
		var err6 error
		c6, err6 = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback, Port: actual})
		if err6 == nil {
			break
		}
		c6 = nil
		if port != 0 || isNoIPv6(err6) {
			b.logf("flyapitest: gateway: no ::1 listener: %v", err6)
			break
		}
		// the ephemeral port is taken on ::1: try another one
		c4.Close()
		c4 = nil
	}
	if c4 == nil {
		return nil, 0, errors.New("could not find a port free on both 127.0.0.1 and ::1")
	}
	// Like conn.StdNetBind: big socket buffers, or bursts overflow the
	// default ~200 KiB and cost retransmissions (capped by net.core.*mem_max).
	for _, c := range []*net.UDPConn{c4, c6} {
		if c != nil {
			_ = c.SetReadBuffer(socketBufferSize)
			_ = c.SetWriteBuffer(socketBufferSize)
		}
	}
	b.c4, b.p4 = c4, ipv4.NewPacketConn(c4)
	fns := []conn.ReceiveFunc{b.makeRecv4(b.p4)}
	if c6 != nil {
		b.c6, b.p6 = c6, ipv6.NewPacketConn(c6)
		fns = append(fns, b.makeRecv6(b.p6))
	}
	return fns, uint16(c4.LocalAddr().(*net.UDPAddr).Port), nil
}

func isNoIPv6(err error) bool { return !errors.Is(err, syscall.EADDRINUSE) }

func (b *loopBind) makeRecv4(pc *ipv4.PacketConn) conn.ReceiveFunc {
	msgs := make([]ipv4.Message, bindBatch)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
	}
	var last *loopEndpoint
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n := min(len(bufs), len(msgs))
		for i := 0; i < n; i++ {
			msgs[i].Buffers[0] = bufs[i]
			msgs[i].N, msgs[i].Addr = 0, nil
		}
		got, err := pc.ReadBatch(msgs[:n], 0)
		if err != nil {
			return 0, err
		}
		for i := 0; i < got; i++ {
			sizes[i] = msgs[i].N
			last = endpointFor(msgs[i].Addr, last)
			eps[i] = last
		}
		return got, nil
	}
}

func (b *loopBind) makeRecv6(pc *ipv6.PacketConn) conn.ReceiveFunc {
	msgs := make([]ipv6.Message, bindBatch)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
	}
	var last *loopEndpoint
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n := min(len(bufs), len(msgs))
		for i := 0; i < n; i++ {
			msgs[i].Buffers[0] = bufs[i]
			msgs[i].N, msgs[i].Addr = 0, nil
		}
		got, err := pc.ReadBatch(msgs[:n], 0)
		if err != nil {
			return 0, err
		}
		for i := 0; i < got; i++ {
			sizes[i] = msgs[i].N
			last = endpointFor(msgs[i].Addr, last)
			eps[i] = last
		}
		return got, nil
	}
}

// endpointFor reuses the previous endpoint when the sender is the same.
func endpointFor(a net.Addr, prev *loopEndpoint) *loopEndpoint {
	ua, _ := a.(*net.UDPAddr)
	if ua == nil {
		return &loopEndpoint{}
	}
	ap := ua.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if prev != nil && prev.ap == ap {
		return prev
	}
	return &loopEndpoint{ap: ap}
}

func (b *loopBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	if b.c4 != nil {
		errs = append(errs, b.c4.Close())
		b.c4, b.p4 = nil, nil
	}
	if b.c6 != nil {
		errs = append(errs, b.c6.Close())
		b.c6, b.p6 = nil, nil
	}
	return errors.Join(errs...)
}

func (b *loopBind) SetMark(uint32) error { return nil }
func (b *loopBind) BatchSize() int       { return bindBatch }

func (b *loopBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("flyapitest gateway only talks to loopback, not %s", ap)
	}
	return &loopEndpoint{ap: ap}, nil
}

func (b *loopBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	le, ok := ep.(*loopEndpoint)
	if !ok || !le.ap.Addr().IsLoopback() {
		return conn.ErrWrongEndpointType
	}
	b.mu.Lock()
	p4, p6 := b.p4, b.p6
	b.mu.Unlock()
	if le.ap.Addr().Is4() {
		if p4 == nil {
			return net.ErrClosed
		}
		ua := &net.UDPAddr{IP: le.ap.Addr().AsSlice(), Port: int(le.ap.Port())}
		msp := b.pool4.Get().(*[]ipv4.Message)
		defer b.pool4.Put(msp)
		ms := *msp
		for len(bufs) > 0 {
			n := min(len(bufs), len(ms))
			for i := 0; i < n; i++ {
				ms[i].Buffers[0], ms[i].Addr = bufs[i], ua
			}
			sent, err := p4.WriteBatch(ms[:n], 0)
			if err != nil {
				return err
			}
			if sent == 0 {
				return errors.New("sendmmsg sent nothing")
			}
			bufs = bufs[sent:]
		}
		return nil
	}
	if p6 == nil {
		return net.ErrClosed
	}
	ua := &net.UDPAddr{IP: le.ap.Addr().AsSlice(), Port: int(le.ap.Port())}
	msp := b.pool6.Get().(*[]ipv6.Message)
	defer b.pool6.Put(msp)
	ms := *msp
	for len(bufs) > 0 {
		n := min(len(bufs), len(ms))
		for i := 0; i < n; i++ {
			ms[i].Buffers[0], ms[i].Addr = bufs[i], ua
		}
		sent, err := p6.WriteBatch(ms[:n], 0)
		if err != nil {
			return err
		}
		if sent == 0 {
			return errors.New("sendmmsg sent nothing")
		}
		bufs = bufs[sent:]
	}
	return nil
}

func (b *loopBind) localPort() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c4 == nil {
		return 0
	}
	return b.c4.LocalAddr().(*net.UDPAddr).Port
}

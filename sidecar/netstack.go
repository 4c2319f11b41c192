package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Netstack tuning. The numbers come from measurements with hack/bench-tunnel.sh
// (see docs/benchmarks.md); change them only together with a new measurement.
const (
	// nicID is the only NIC of the stack.
	nicID tcpip.NICID = 1

	// tunBatchSize is how many packets wireguard-go hands to, or takes from,
	// the netstack per call. Larger batches amortise per-call overhead and let
	// GRO coalesce more segments.
	tunBatchSize = 32

	// outQueueLen bounds the packets gVisor may have queued for wireguard-go.
	// When it is full, gVisor's writers block (backpressure) instead of the
	// packets being dropped and retransmitted, as channel.Endpoint does.
	outQueueLen = 256

	// TCP buffer ranges. Both buffers start at the default and gVisor's
	// auto-tuning grows them with what the path needs (receive: what the
	// application read in the last RTT; send: the congestion window), up to
	// a maximum that is not fixed but shared out of a budget (see
	// bufferBudget): at 96 MiB, one stream may grow to the ceiling, 8 MiB,
	// which a 200 Mbit/s path needs at 100 ms RTT (gVisor advertises half
	// its receive buffer as window); 100 streams get the floor each.
	tcpRecvBufMin     = 4 << 10
	tcpRecvBufDef     = 256 << 10
	tcpSendBufMin     = 4 << 10
	tcpSendBufDef     = 256 << 10
	tcpBufMaxCeiling  = 8 << 20
	tcpBufMaxFloor    = 256 << 10
	tcpBudgetFraction = 4 // of the Go memory limit
	// budgetRetune is how often the shares follow connections that closed
	// (a dial recomputes them at once).
	budgetRetune = time.Second
)

// netTun is a wireguard-go tun.Device backed by a gVisor stack through a
// custom link endpoint: batched reads and writes, GRO on the inbound path,
// a bounded outbound queue with backpressure, and one copy per packet in each
// direction (wireguard buffer <-> gVisor buffer).
type netTun struct {
	stack  *stack.Stack
	mtu    int
	events chan tun.Event
	keep   time.Duration // TCP keepalive idle time

	out       chan *stack.PacketBuffer
	closed    chan struct{}
	closeOnce sync.Once

	// budget is what all TCP buffers may grow to together; 0 when both
	// maxima are fixed (netStackOptions.RecvBufMax/SendBufMax, which
	// rcvFixed and sndFixed keep).
	budget             int64
	rcvFixed, sndFixed int
	bufMax             atomic.Int64 // the shared per-connection maximum in force
	retuneM            sync.Mutex

	gate, outGate *packetGate // nil: no bound on the packets in flight in wireguard-go

	mu         sync.Mutex // serialises inbound delivery (GRO is single-threaded)
	gro        gro.GRO
	dispatcher stack.NetworkDispatcher

	// Counters for tests and debugging.
	inPackets  atomic.Uint64
	outPackets atomic.Uint64
}

// netStackOptions tunes the stack; exposed so benchmarks can compare variants.
type netStackOptions struct {
	MTU        int
	Local      netip.Addr
	DisableGRO bool
	// RecvBufMax and SendBufMax fix the per-connection maxima (0: shared
	// out of BufferBudget).
	RecvBufMax int
	SendBufMax int
	// BufferBudget is what the TCP buffers of all connections may grow to
	// together (0: a quarter of the Go memory limit, see bufferBudget).
	BufferBudget int64
	// InFlight bounds the received packets wireguard-go may hold before the
	// netstack takes them (packetGate; 0: from the budget, -1: no bound).
	InFlight    int
	Congestion  string // "cubic" or "reno"
	DisableSACK bool
	// KeepaliveIdle: see keepalive.go (0: tcpKeepaliveIdle).
	KeepaliveIdle time.Duration
	// EnableRACK turns gVisor's RACK loss detection (and its tail loss
	// probe) back on; it is off by default, see newNetTun.
	EnableRACK bool
	// MinRTO is the floor of the retransmission timeout (0: gVisor's
	// 200 ms, the same as Linux's).
	MinRTO time.Duration
}

func newNetTun(o netStackOptions) (*netTun, error) {
	if !o.Local.IsValid() {
		return nil, errors.New("netstack: no local address")
	}
	var budget int64
	rcvMax, sndMax := o.RecvBufMax, o.SendBufMax
	if rcvMax == 0 || sndMax == 0 {
		budget = o.BufferBudget
		if budget <= 0 {
			budget = bufferBudget(debug.SetMemoryLimit(-1))
		}
		share := bufShare(budget, 1)
		if rcvMax == 0 {
			rcvMax = share
		}
		if sndMax == 0 {
			sndMax = share
		}
	}
	if o.Congestion == "" {
		o.Congestion = "cubic"
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
		HandleLocal:        false,
	})
	t := &netTun{
		stack:  s,
		mtu:    o.MTU,
		keep:   o.KeepaliveIdle,
		events: make(chan tun.Event, 4),
		out:    make(chan *stack.PacketBuffer, outQueueLen),
		closed: make(chan struct{}),
		budget: budget,
	}
	if budget > 0 {
		t.rcvFixed, t.sndFixed = o.RecvBufMax, o.SendBufMax
	}
	t.bufMax.Store(int64(bufShare(budget, 1)))
	if n := inFlight(o.InFlight, budget); n > 0 {
		t.gate, t.outGate = newPacketGate(n, t.closed), newPacketGate(n, t.closed)
	}
	t.gro.Init(!o.DisableGRO)

	sack := tcpip.TCPSACKEnabled(!o.DisableSACK)
	rcv, snd := bufRanges(rcvMax, sndMax)
	cc := tcpip.CongestionControlOption(o.Congestion)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	// A short TIME-WAIT keeps closed connections from holding memory long.
	tw := tcpip.TCPTimeWaitTimeoutOption(5 * time.Second)
	// RACK loss detection off (classic duplicate-ACK and SACK recovery stay):
	// after a burst of losses gVisor's RACK kept an upload in recovery at two
	// segments per retransmission timeout for tens of seconds, nothing else
	// lost (TestNetstackUploadSurvivesLossBursts, docs/stall.md).
	rack := tcpip.TCPRecovery(0)
	if o.EnableRACK {
		rack = tcpip.TCPRACKLossDetection
	}
	// No Nagle on the tunnel side, like Go's TCP_NODELAY on the local
	// socket: a small write must not wait for the ACK of the previous one,
	// a whole tunnel round trip. This is gVisor's default today; it is set
	// here so that a change of default cannot slow small requests unseen.
	nagle := tcpip.TCPDelayEnabled(false)
	opts := []tcpip.SettableTransportProtocolOption{&sack, &rcv, &snd, &cc, &moderate, &tw, &rack, &nagle}
	if o.MinRTO > 0 {
		minRTO := tcpip.TCPMinRTOOption(o.MinRTO)
		opts = append(opts, &minRTO)
	}
	for _, opt := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			s.Close()
			return nil, fmt.Errorf("netstack: set TCP option %T: %v", opt, err)
		}
	}
	if err := s.CreateNIC(nicID, (*linkEP)(t)); err != nil {
		s.Close()
		return nil, fmt.Errorf("netstack: create NIC: %v", err)
	}
	proto := ipv6.ProtocolNumber
	if o.Local.Is4() {
		proto = ipv4.ProtocolNumber
	}
	pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(o.Local.AsSlice()).WithPrefix()}
	if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		s.Close()
		return nil, fmt.Errorf("netstack: add address %s: %v", o.Local, err)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
	})
	t.events <- tun.EventUp
	if budget > 0 {
		go t.retuneLoop()
	}
	return t, nil
}

// --- tun.Device (wireguard-go side) ---

func (t *netTun) File() *os.File           { return nil }
func (t *netTun) MTU() (int, error)        { return t.mtu, nil }
func (t *netTun) Name() (string, error)    { return "glaceon", nil }
func (t *netTun) Events() <-chan tun.Event { return t.events }
func (t *netTun) BatchSize() int           { return tunBatchSize }

// Read hands packets that gVisor wants to send to wireguard-go. It blocks for
// the first packet and then takes whatever else is queued, up to len(bufs).
func (t *netTun) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if t.outGate != nil {
		t.outGate.wait()
	}
	var pkt *stack.PacketBuffer
	select {
	case pkt = <-t.out:
	case <-t.closed:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		sizes[n] = copyPacket(bufs[n][offset:], pkt)
		pkt.DecRef()
		n++
		if n == len(bufs) {
			break
		}
		select {
		case pkt = <-t.out:
			continue
		default:
		}
		break
	}
	t.outPackets.Add(uint64(n))
	if t.outGate != nil {
		t.outGate.take(n)
	}
	return n, nil
}

func copyPacket(dst []byte, pkt *stack.PacketBuffer) int {
	n := 0
	for _, s := range pkt.AsSlices() {
		n += copy(dst[n:], s)
	}
	return n
}

// Write delivers decrypted packets from wireguard-go into gVisor.
func (t *netTun) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-t.closed:
		return 0, os.ErrClosed
	default:
	}
	if t.gate != nil {
		defer t.gate.written(len(bufs))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Checked again under the lock: Close waits for this lock before it
	// shuts the stack (see there).
	select {
	case <-t.closed:
		return 0, os.ErrClosed
	default:
	}
	if t.dispatcher == nil {
		return len(bufs), nil
	}
	for _, b := range bufs {
		p := b[offset:]
		if len(p) == 0 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch p[0] >> 4 {
		case 4:
			proto = header.IPv4ProtocolNumber
		case 6:
			proto = header.IPv6ProtocolNumber
		default:
			continue // not IP: drop, like a kernel would
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		pkt.NetworkProtocolNumber = proto
		// WireGuard authenticated the packet; a transport checksum check would
		// only cost CPU.
		pkt.RXChecksumValidated = true
		t.gro.Enqueue(pkt)
		pkt.DecRef()
	}
	t.gro.Flush()
	t.inPackets.Add(uint64(len(bufs)))
	return len(bufs), nil
}

func (t *netTun) Close() error {
	t.closeOnce.Do(func() {
		close(t.closed)
		// A Write delivering into the stack holds t.mu and needs the
		// stack's read lock; stack.Wait removes the NIC under the stack's
		// write lock and then calls Attach, which needs t.mu. Let any such
		// Write finish first: after this, Writes see closed and return.
		t.mu.Lock()
		//lint:ignore SA2001 an empty critical section is the point: a barrier
		t.mu.Unlock()
		t.stack.Close()
		t.stack.Wait()
		close(t.events)
		// Release whatever is still queued.
		for {
			select {
			case pkt := <-t.out:
				pkt.DecRef()
			default:
				return
			}
		}
	})
	return nil
}

// --- stack.LinkEndpoint (gVisor side) ---

type linkEP netTun

func (l *linkEP) MTU() uint32                      { return uint32(l.mtu) }
func (l *linkEP) SetMTU(uint32)                    {}
func (l *linkEP) MaxHeaderLength() uint16          { return 0 }
func (l *linkEP) LinkAddress() tcpip.LinkAddress   { return "" }
func (l *linkEP) SetLinkAddress(tcpip.LinkAddress) {}
func (l *linkEP) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}
func (l *linkEP) IsAttached() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dispatcher != nil
}
func (l *linkEP) Attach(d stack.NetworkDispatcher) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dispatcher = d
	l.gro.Dispatcher = d
}
func (l *linkEP) Wait()                                   {}
func (l *linkEP) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (l *linkEP) AddHeader(*stack.PacketBuffer)           {}
func (l *linkEP) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (l *linkEP) Close()                                  {}
func (l *linkEP) SetOnCloseAction(func())                 {}

// WritePackets queues packets for wireguard-go. It blocks while the queue is
// full: TCP then slows down instead of losing packets.
func (l *linkEP) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		select {
		case l.out <- pkt.IncRef():
			n++
		case <-l.closed:
			pkt.DecRef()
			if n == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			return n, nil
		}
	}
	return n, nil
}

// --- dialing ---

// dialTCP connects to addr through the netstack. Errors are *dialError with a
// reason suitable for metrics.
func (t *netTun) dialTCP(ctx context.Context, addr netip.AddrPort) (*gonet.TCPConn, error) {
	proto := ipv6.ProtocolNumber
	if addr.Addr().Is4() {
		proto = ipv4.ProtocolNumber
	}
	var wq waiter.Queue
	ep, terr := t.stack.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, &dialError{reason: DialReasonOther, err: errors.New(terr.String())}
	}
	if err := setKeepalive(ep, t.keep); err != nil {
		ep.Close()
		return nil, &dialError{reason: DialReasonOther, err: err}
	}
	if t.budget > 0 {
		t.retune(t.established() + 1)
	}
	we, ch := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	full := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(addr.Addr().AsSlice()), Port: addr.Port()}
	terr = ep.Connect(full)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, &dialError{reason: DialReasonTimeout, err: ctx.Err()}
		case <-ch:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		reason := DialReasonOther
		switch terr.(type) {
		case *tcpip.ErrConnectionRefused, *tcpip.ErrConnectionReset:
			reason = DialReasonRefused
		case *tcpip.ErrTimeout, *tcpip.ErrAborted:
			reason = DialReasonTimeout
		case *tcpip.ErrHostUnreachable, *tcpip.ErrNetworkUnreachable:
			reason = DialReasonUnreachable
		}
		return nil, &dialError{reason: reason, err: errors.New(terr.String())}
	}
	return gonet.NewTCPConn(&wq, ep), nil
}

// dialUDP opens a connected UDP socket through the netstack (used for DNS).
func (t *netTun) dialUDP(addr netip.AddrPort) (*gonet.UDPConn, error) {
	proto := ipv6.ProtocolNumber
	if addr.Addr().Is4() {
		proto = ipv4.ProtocolNumber
	}
	full := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(addr.Addr().AsSlice()), Port: addr.Port()}
	return gonet.DialUDP(t.stack, nil, &full, proto)
}

// Dial reasons: the reason label of glaceon_dial_errors_total, read back
// by glaceon doctor.
const (
	DialReasonDNS         = "dns"
	DialReasonRefused     = "refused"
	DialReasonTimeout     = "timeout"
	DialReasonHandshake   = "handshake"
	DialReasonUnreachable = "unreachable"
	DialReasonOther       = "other"
)

type dialError struct {
	reason string
	err    error
}

func (e *dialError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

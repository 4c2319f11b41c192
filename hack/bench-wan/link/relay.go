package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

const (
	batch     = 64
	maxPacket = 65535
	// socketBuf is asked for with SO_RCVBUFFORCE/SO_SNDBUFFORCE (root) so
	// that the relay's own sockets never drop: only emulated loss is lost.
	socketBuf = 32 << 20
	// hardLimit bounds the bytes held per direction (bottleneck queue plus
	// datagrams in flight on the delay line), whatever the parameters.
	hardLimit = 256 << 20
)

// Relay is a UDP relay on IPv4 loopback between one client (whoever last
// sent to Addr) and one server (target): client → server is the "up"
// direction, server → client "down".
type Relay struct {
	client, server *net.UDPConn // client-facing socket (Addr), server-facing socket
	target         netip.AddrPort
	peer           atomic.Pointer[netip.AddrPort] // the client's address, learned from its datagrams
	duplex
	closeOnce sync.Once
}

// NewRelay listens on 127.0.0.1 (a free port) and forwards to target, which
// must be a loopback address.
func NewRelay(target netip.AddrPort, up, down Params) (*Relay, error) {
	if !target.Addr().IsLoopback() {
		return nil, fmt.Errorf("link: target %s is not a loopback address", target)
	}
	if err := validPair(up, down, Params.Validate); err != nil {
		return nil, err
	}
	r := &Relay{target: target}
	var err error
	if r.client, err = listen(); err != nil {
		return nil, err
	}
	if r.server, err = listen(); err != nil {
		r.client.Close()
		return nil, err
	}
	learn := func(src netip.AddrPort) {
		if p := r.peer.Load(); p == nil || *p != src {
			r.peer.Store(&src)
		}
	}
	toServer := func() (netip.AddrPort, bool) { return r.target, true }
	toClient := func() (netip.AddrPort, bool) {
		if p := r.peer.Load(); p != nil {
			return *p, true
		}
		return netip.AddrPort{}, false
	}
	r.start(
		newDirection(newUDPSource(r.client, learn), newUDPSink(r.server, toServer), up),
		newDirection(newUDPSource(r.server, nil), newUDPSink(r.client, toClient), down))
	return r, nil
}

func listen() (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("link: listen: %w", err)
	}
	sc, err := c.SyscallConn()
	if err == nil {
		err = sc.Control(func(fd uintptr) {
			for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
				if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], socketBuf) != nil {
					_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], socketBuf)
				}
			}
		})
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("link: socket buffers: %w", err)
	}
	return c, nil
}

// Addr is where the client sends to.
func (r *Relay) Addr() netip.AddrPort { return r.client.LocalAddr().(*net.UDPAddr).AddrPort() }

// Close stops the relay and waits for its goroutines.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.client.Close()
		r.server.Close()
		r.stop()
	})
	return nil
}

// duplex is a relay's two directions and their goroutines.
type duplex struct {
	up, down *direction
	wg       sync.WaitGroup
}

func (x *duplex) start(up, down *direction) {
	x.up, x.down = up, down
	for _, d := range []*direction{up, down} {
		x.wg.Add(2)
		go func() { defer x.wg.Done(); d.readLoop() }()
		go func() { defer x.wg.Done(); d.sendLoop() }()
	}
}

// stop ends both directions once their sources and sinks are closed, and
// waits for their goroutines.
func (x *duplex) stop() {
	x.up.close()
	x.down.close()
	x.wg.Wait()
}

// Set changes both directions' parameters; datagrams already queued keep
// their delivery times.
func (x *duplex) Set(up, down Params) error {
	if err := validPair(up, down, Params.Validate); err != nil {
		return err
	}
	x.up.set(up)
	x.down.set(down)
	return nil
}

// Stats returns the counts of both directions since the last Set.
func (x *duplex) Stats() (up, down DirStats) { return x.up.stats(), x.down.stats() }

// DirStats are a direction's model counts plus how late datagrams left.
type DirStats struct {
	Stats
	Overflow int64 // dropped at the relay's hard memory limit (should be 0)
	// LateP50, LateP99: how long after its due time a datagram was sent.
	LateP50, LateP99 time.Duration
	Sent             int64
}

type packet struct {
	b   []byte
	due time.Time
}

// packetSource hands out the next batch of packets (datagrams or IP
// packets); the slices are valid until the next call.
type packetSource interface {
	readPackets() ([][]byte, error)
}

// packetSink sends a batch of packets; it returns an error only when it is
// closed (a packet it cannot send is lost, as on a wire).
type packetSink interface {
	writePackets(pkts [][]byte) error
}

type direction struct {
	src packetSource
	dst packetSink

	dirState
	q       []packet // FIFO; due times never decrease
	head    int
	held    int // bytes in q
	wake    chan struct{}
	done    chan struct{}
	closing atomic.Bool
	pool    sync.Pool
}

func newDirection(src packetSource, dst packetSink, p Params) *direction {
	d := &direction{src: src, dst: dst, dirState: dirState{model: NewModel(p)}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	d.pool.New = func() any { b := make([]byte, 2048); return &b }
	return d
}

// dirState is one direction's link model and counters, the same in the
// datagram and the stream relay.
type dirState struct {
	mu    sync.Mutex
	model *Model
	over  int64 // datagrams dropped, or reads held back, past the queue
	late  lateHist
	sent  int64
}

func (d *dirState) set(p Params) {
	d.mu.Lock()
	defer d.mu.Unlock()
	// Keep the bottleneck's backlog and the FIFO order across a change.
	m := NewModel(p)
	m.busyUntil, m.lastDue = d.model.busyUntil, d.model.lastDue
	d.model = m
	d.over, d.sent = 0, 0
	d.late = lateHist{}
}

func (d *dirState) stats() DirStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return DirStats{Stats: d.model.Stats(), Overflow: d.over, Sent: d.sent, LateP50: d.late.quantile(.5), LateP99: d.late.quantile(.99)}
}

func (d *direction) close() {
	if d.closing.CompareAndSwap(false, true) {
		close(d.done)
	}
}

func (d *direction) readLoop() {
	for {
		pkts, err := d.src.readPackets()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) || d.closing.Load() {
				return
			}
			continue
		}
		now := time.Now()
		d.mu.Lock()
		for _, pkt := range pkts {
			size := len(pkt)
			due, ok := d.model.Admit(now, size)
			if !ok {
				continue
			}
			if d.held+size > hardLimit {
				d.over++
				continue
			}
			var b []byte
			if size <= 2048 {
				b = (*d.pool.Get().(*[]byte))[:size]
			} else {
				b = make([]byte, size)
			}
			copy(b, pkt)
			d.q = append(d.q, packet{b: b, due: due})
			d.held += size
		}
		d.mu.Unlock()
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// sendLoop sends each datagram at its due time. It runs on its own OS
// thread with a 1 ns timer slack and sleeps with nanosleep, which wakes
// within tens of µs, instead of Go timers, which on an idle process wake
// about 1 ms late and so would release datagrams in bursts.
func (d *direction) sendLoop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	out := make([]packet, 0, batch)
	bufs := make([][]byte, 0, batch)
	for {
		d.mu.Lock()
		if d.head == len(d.q) {
			d.q, d.head = d.q[:0], 0
			d.mu.Unlock()
			select {
			case <-d.wake:
				continue
			case <-d.done:
				return
			}
		}
		due := d.q[d.head].due
		d.mu.Unlock()
		if wait := time.Until(due); wait > 0 {
			ts := unix.NsecToTimespec(int64(wait))
			// Interrupted (EINTR, e.g. the runtime's preemption signal):
			// the loop measures again.
			_ = unix.Nanosleep(&ts, nil)
			if d.closing.Load() {
				return
			}
			continue
		}
		now := time.Now()
		d.mu.Lock()
		out = out[:0]
		for d.head < len(d.q) && len(out) < batch && !d.q[d.head].due.After(now) {
			p := d.q[d.head]
			d.q[d.head] = packet{}
			d.head++
			d.held -= len(p.b)
			d.late.add(now.Sub(p.due))
			out = append(out, p)
		}
		// Compact once the consumed head dominates.
		if d.head > 4096 && d.head*2 > len(d.q) {
			n := copy(d.q, d.q[d.head:])
			clear(d.q[n:])
			d.q, d.head = d.q[:n], 0
		}
		d.sent += int64(len(out))
		d.mu.Unlock()
		bufs = bufs[:0]
		for _, p := range out {
			bufs = append(bufs, p.b)
		}
		if err := d.dst.writePackets(bufs); err != nil {
			return
		}
		for _, p := range out {
			if cap(p.b) == 2048 {
				b := p.b[:2048]
				d.pool.Put(&b)
			}
		}
	}
}

// udpSource reads datagrams in batches from a relay socket and reports
// each one's source address to learn (if not nil).
type udpSource struct {
	pc    *ipv4.PacketConn
	msgs  []ipv4.Message
	out   [][]byte
	learn func(netip.AddrPort)
}

func newUDPSource(c *net.UDPConn, learn func(netip.AddrPort)) *udpSource {
	s := &udpSource{pc: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, batch), learn: learn}
	for i := range s.msgs {
		s.msgs[i].Buffers = [][]byte{make([]byte, maxPacket)}
	}
	return s
}

func (s *udpSource) readPackets() ([][]byte, error) {
	n, err := s.pc.ReadBatch(s.msgs, 0)
	if err != nil {
		return nil, err
	}
	s.out = s.out[:0]
	for i := range s.msgs[:n] {
		m := &s.msgs[i]
		if ua, ok := m.Addr.(*net.UDPAddr); ok && s.learn != nil {
			s.learn(ua.AddrPort())
		}
		s.out = append(s.out, m.Buffers[0][:m.N])
	}
	return s.out, nil
}

// udpSink sends datagrams in batches from a relay socket to wherever to
// says (nowhere yet: they are lost).
type udpSink struct {
	pc   *ipv4.PacketConn
	msgs []ipv4.Message
	to   func() (netip.AddrPort, bool)
}

func newUDPSink(c *net.UDPConn, to func() (netip.AddrPort, bool)) *udpSink {
	s := &udpSink{pc: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, batch), to: to}
	for i := range s.msgs {
		s.msgs[i].Buffers = make([][]byte, 1)
	}
	return s
}

func (s *udpSink) writePackets(pkts [][]byte) error {
	dst, ok := s.to()
	if !ok {
		return nil
	}
	ua := net.UDPAddrFromAddrPort(dst)
	for i, p := range pkts {
		s.msgs[i].Buffers[0] = p
		s.msgs[i].Addr = ua
	}
	for k := 0; k < len(pkts); {
		n, err := s.pc.WriteBatch(s.msgs[k:len(pkts)], 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// A full socket buffer or an ICMP error from a closed port:
			// skip one datagram (the receiver lost it).
			if errors.Is(err, syscall.ECONNREFUSED) || n == 0 {
				n = 1
			}
		}
		k += n
	}
	return nil
}

// lateHist is a histogram of send lateness in 10 µs buckets up to 100 ms.
type lateHist struct {
	n       int64
	buckets [10001]int64
}

func (h *lateHist) add(d time.Duration) {
	i := min(int(d/(10*time.Microsecond)), len(h.buckets)-1)
	h.buckets[max(i, 0)]++
	h.n++
}

func (h *lateHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	want := int64(float64(h.n-1)*q) + 1
	var c int64
	for i, b := range h.buckets {
		if c += b; c >= want {
			return time.Duration(i+1) * 10 * time.Microsecond
		}
	}
	return 100 * time.Millisecond
}

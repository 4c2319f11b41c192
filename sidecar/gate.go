package sidecar

import (
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

const (
	// gateStuck: a receiver that waited this long without a single packet
	// reaching the netstack gives its credits up. Packets that wireguard-go
	// drops after the bind (a stale key, a replay, a source outside the
	// allowed IPs) never reach netTun.Write, so their credits would
	// otherwise be lost for good and, one day, block the tunnel.
	gateStuck = 100 * time.Millisecond
	// wgDataHeader is the size of an empty WireGuard data message
	// (a keepalive): type, receiver, counter, and the tag.
	wgDataHeader = 32
	// wgMessageBuffer is what wireguard-go allocates per packet in flight,
	// whatever the packet's size.
	wgMessageBuffer = device.MaxMessageSize
)

// packetGate bounds how many packets wireguard-go holds on one path, each
// in a 64 KiB buffer: inbound, WireGuard data packets between the bind's
// receive and netTun.Write; outbound, packets between netTun.Read and the
// bind's Send.
//
// Inbound, when the sidecar is descheduled for a few milliseconds, the
// datagrams that arrived meanwhile are read in one go and wait in
// wireguard-go's queues (1024 deep) at 45 times their size: with an 8 MiB
// receive buffer, 82 of a 90 MB heap (docs/benchmarks.md). Past the bound
// the receiver waits, and the datagrams wait in the kernel's socket buffer
// instead, at their own size, or are dropped there when it is full: a loss
// TCP answers by slowing down. Outbound, a gVisor sender with a large
// window bursts packets faster than the socket takes them; past the bound
// netTun.Read waits and gVisor's own writers block on the link queue.
type packetGate struct {
	max    int
	closed <-chan struct{}

	mu       sync.Mutex
	n        int           // packets in wireguard-go
	progress uint64        // releases so far
	wake     chan struct{} // closed when n falls below max; nil while nobody waits
}

func newPacketGate(max int, closed <-chan struct{}) *packetGate {
	return &packetGate{max: max, closed: closed}
}

// wait returns once fewer than max packets are in flight (or the tunnel
// closes, or the credits are stale).
func (g *packetGate) wait() {
	for {
		g.mu.Lock()
		if g.n < g.max {
			g.mu.Unlock()
			return
		}
		if g.wake == nil {
			g.wake = make(chan struct{})
		}
		wake, progress := g.wake, g.progress
		g.mu.Unlock()
		t := time.NewTimer(gateStuck)
		select {
		case <-wake:
		case <-g.closed:
			t.Stop()
			return
		case <-t.C:
			g.mu.Lock()
			if g.progress == progress {
				g.n = 0
			}
			g.mu.Unlock()
		}
		t.Stop()
	}
}

// read counts the data packets among what a receive returned.
func (g *packetGate) read(bufs [][]byte, sizes []int, n int) {
	data := 0
	for i := range n {
		if sizes[i] > wgDataHeader && bufs[i][0] == 4 { // MessageTransportType
			data++
		}
	}
	g.take(data)
}

// take counts k packets handed to wireguard-go.
func (g *packetGate) take(k int) {
	if k == 0 {
		return
	}
	g.mu.Lock()
	g.n += k
	g.mu.Unlock()
}

// written releases k packets the netstack has taken.
func (g *packetGate) written(k int) {
	g.mu.Lock()
	g.n = max(g.n-k, 0)
	g.progress++
	if g.wake != nil && g.n < g.max {
		close(g.wake)
		g.wake = nil
	}
	g.mu.Unlock()
}

// receive wraps a bind's receive function.
func (g *packetGate) receive(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		g.wait()
		n, err := fn(bufs, sizes, eps)
		g.read(bufs, sizes, n)
		return n, err
	}
}

// gatedBind is a conn.Bind whose receive functions go through the inbound
// gate, and whose sends release the outbound one.
type gatedBind struct {
	conn.Bind
	gate, out *packetGate
}

// Send releases what it sent, or failed to send, from the outbound gate.
// Handshakes and keepalives, which never passed the gate, release a little
// early: the bound is loose by a few packets, never stuck.
func (b *gatedBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	err := b.Bind.Send(bufs, ep)
	b.out.written(len(bufs))
	return err
}

func (b *gatedBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	for i := range fns {
		fns[i] = b.gate.receive(fns[i])
	}
	return fns, actual, err
}

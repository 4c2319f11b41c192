package link

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// tunOffset is the headroom wireguard-go's TUN device wants in front of
// each packet (at least its virtio header, 10 bytes).
const tunOffset = 16

// TunRelay forwards IP packets between two TUN devices through the same
// Model as Relay, one packet at a time: a → b is "up", b → a "down". With
// the devices' interfaces in two network namespaces (or one in the root
// namespace), every packet of a kernel TCP connection between them crosses
// the emulated link, so the TCP at both ends sees the delay, the rate cap,
// the drop-tail queue and the random loss, as on a real path. The
// WebSocket transport's TCP runs over it (hack/bench-wan).
//
// The devices' offloads stay on: a TSO burst the kernel writes is read
// back as the MTU-sized packets a wire would carry (wireguard-go splits
// it), and what leaves is coalesced again where it can (GRO), so the
// Model sees real packets and the kernel few system calls.
type TunRelay struct {
	a, b tun.Device
	duplex
	once   sync.Once
	closed chan struct{}
}

// NewTunRelay relays between a and b. Once it returns without an error the
// relay owns them: Close closes them.
func NewTunRelay(a, b tun.Device, up, down Params) (*TunRelay, error) {
	if err := validPair(up, down, Params.Validate); err != nil {
		return nil, err
	}
	r := &TunRelay{a: a, b: b, closed: make(chan struct{})}
	r.start(newDirection(newTunSource(a), newTunSink(b), up), newDirection(newTunSource(b), newTunSink(a), down))
	// The devices report link changes on a 5-deep channel whose sender
	// blocks when it is full; nobody else reads it here.
	for _, dev := range []tun.Device{a, b} {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for {
				select {
				case <-dev.Events():
				case <-r.closed:
					return
				}
			}
		}()
	}
	return r, nil
}

// Close closes both devices (their interfaces go with them) and waits for
// the relay's goroutines.
func (r *TunRelay) Close() error {
	var err error
	r.once.Do(func() {
		close(r.closed)
		err = errors.Join(r.a.Close(), r.b.Close())
		r.stop()
	})
	return err
}

// tunSource reads a device's packets, a batch at a time.
type tunSource struct {
	dev   tun.Device
	bufs  [][]byte
	sizes []int
	out   [][]byte
}

func newTunSource(dev tun.Device) *tunSource {
	n := max(dev.BatchSize(), 1)
	s := &tunSource{dev: dev, bufs: make([][]byte, n), sizes: make([]int, n)}
	for i := range s.bufs {
		s.bufs[i] = make([]byte, tunOffset+maxPacket)
	}
	return s
}

func (s *tunSource) readPackets() ([][]byte, error) {
	n, err := s.dev.Read(s.bufs, s.sizes, tunOffset)
	if n == 0 && err != nil {
		return nil, err
	}
	s.out = s.out[:0]
	for i := range n {
		s.out = append(s.out, s.bufs[i][tunOffset:tunOffset+s.sizes[i]])
	}
	// An error after n packets (a short batch) is reported by the next read.
	return s.out, nil
}

// tunSink writes packets to a device. It copies them into buffers of the
// largest packet's size, so that the device can coalesce consecutive TCP
// segments of a flow into one write (GRO).
type tunSink struct {
	dev  tun.Device
	bufs [][]byte
	out  [][]byte
}

func newTunSink(dev tun.Device) *tunSink {
	s := &tunSink{dev: dev, bufs: make([][]byte, batch)}
	for i := range s.bufs {
		s.bufs[i] = make([]byte, tunOffset+maxPacket)
	}
	return s
}

func (s *tunSink) writePackets(pkts [][]byte) error {
	if len(pkts) > len(s.bufs) {
		return fmt.Errorf("link: %d packets in one write, more than %d", len(pkts), len(s.bufs))
	}
	s.out = s.out[:0]
	for i, p := range pkts {
		s.out = append(s.out, s.bufs[i][:tunOffset+copy(s.bufs[i][tunOffset:], p)])
	}
	_, err := s.dev.Write(s.out, tunOffset)
	if errors.Is(err, os.ErrClosed) {
		return err
	}
	// Other errors are of single packets (a malformed one): they are lost.
	return nil
}

// TunPath is a TunRelay between an interface in the root network namespace
// (near, with address Near) and one in namespace ns (far, with address
// Far): a packet the root namespace sends to Far crosses the emulated link
// up, the answer comes back down. Both interfaces and their routes go with
// Close (or with the process: the devices are not persistent).
type TunPath struct {
	*TunRelay
	Near, Far netip.Addr
}

// PathAddrs are the two addresses of a TunPath for a process id, in the
// benchmarking range 198.19.0.0/16 (RFC 2544), so that concurrent runs
// (and the tests) do not collide.
func PathAddrs(pid int) (near, far netip.Addr) {
	k := pid % 32768
	near = netip.AddrFrom4([4]byte{198, 19, byte(k / 128), byte(2 * (k % 128))})
	return near, near.Next()
}

// NewTunPath creates the devices near and far (interface names), moves far
// into ns, gives them the addresses PathAddrs(os.Getpid()) with a route to
// each other, and starts the relay.
func NewTunPath(ns, near, far string, mtu int, up, down Params) (p *TunPath, err error) {
	a, err := tun.CreateTUN(near, mtu)
	if err != nil {
		return nil, fmt.Errorf("link: create TUN %s: %w", near, err)
	}
	b, err := tun.CreateTUN(far, mtu)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("link: create TUN %s: %w", far, err)
	}
	defer func() {
		if err != nil {
			a.Close()
			b.Close()
		}
	}()
	na, fa := PathAddrs(os.Getpid())
	// No IPv6 on the path: router solicitations would cross the model.
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+near+"/disable_ipv6", []byte("1"), 0o644); err != nil {
		return nil, fmt.Errorf("link: %s: %w", near, err)
	}
	if err := ipCmd("link", "set", "dev", far, "netns", ns); err != nil {
		return nil, err
	}
	if err := InNetns(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+far+"/disable_ipv6", []byte("1"), 0o644)
	}); err != nil {
		return nil, fmt.Errorf("link: %s in %s: %w", far, ns, err)
	}
	for _, c := range [][]string{
		{"addr", "add", na.String(), "peer", fa.String(), "dev", near},
		{"link", "set", near, "up"},
		{"-n", ns, "addr", "add", fa.String(), "peer", na.String(), "dev", far},
		{"-n", ns, "link", "set", far, "up"},
	} {
		if err := ipCmd(c...); err != nil {
			return nil, err
		}
	}
	r, err := NewTunRelay(a, b, up, down)
	if err != nil {
		return nil, err
	}
	return &TunPath{TunRelay: r, Near: na, Far: fa}, nil
}

func ipCmd(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("link: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// InNetns runs fn on an OS thread switched into the network namespace ns
// (a name under /run/netns); sockets fn opens stay in it.
func InNetns(ns string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", ns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime ends it with this goroutine.
		return fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

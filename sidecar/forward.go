package sidecar

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

const (
	// dialTimeout bounds DNS + TCP connect through the tunnel per connection.
	dialTimeout = 10 * time.Second
	// copyBufSize is the size of the pooled copy buffers (two per connection).
	copyBufSize = 32 << 10
	// logBurstWindow: dial failures of one forward and reason are logged once
	// per window, with the number suppressed.
	logBurstWindow = 10 * time.Second
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// dialer resolves and connects to targets through the tunnel.
type dialer interface {
	Dial(ctx context.Context, host string, port uint16) (net.Conn, error)
}

// forwarder serves one --forward.
type forwarder struct {
	f    Forward
	ln   *net.TCPListener
	d    dialer
	log  logr.Logger
	name string

	bytesOut, bytesIn prometheus.Counter
	active            prometheus.Gauge
	total             prometheus.Counter
	dialDur           prometheus.Observer
	dialErrs          *prometheus.CounterVec

	logMu      sync.Mutex
	lastLogged map[string]time.Time
	suppressed map[string]int

	conns *connSet
	up    atomic.Bool // accept loop running
}

func newForwarder(f Forward, d dialer, m *metrics, log logr.Logger, conns *connSet) (*forwarder, error) {
	ln, err := listenTCP(f.Listen)
	if err != nil {
		return nil, err
	}
	name := f.String()
	fw := &forwarder{
		f: f, ln: ln, d: d, name: name,
		log:        log.WithValues("forward", name),
		bytesOut:   m.bytes.WithLabelValues(name, "out"),
		bytesIn:    m.bytes.WithLabelValues(name, "in"),
		active:     m.connsActive.WithLabelValues(name),
		total:      m.connsTotal.WithLabelValues(name),
		dialDur:    m.dialDuration.WithLabelValues(name),
		dialErrs:   m.dialErrors.MustCurryWith(prometheus.Labels{"forward": name}),
		lastLogged: map[string]time.Time{},
		suppressed: map[string]int{},
		conns:      conns,
	}
	for _, r := range []string{DialReasonDNS, DialReasonRefused, DialReasonTimeout, DialReasonHandshake} {
		fw.dialErrs.WithLabelValues(r) // export zeros so alerts can use rate()
	}
	return fw, nil
}

// serve accepts until the listener is closed.
// The caller sets fw.up before starting it.
func (fw *forwarder) serve(ctx context.Context) {
	defer fw.up.Store(false)
	var delay time.Duration
	for {
		c, err := fw.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary errors (EMFILE...): back off a little.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay < time.Second {
				delay *= 2
			}
			fw.log.Info("accept failed", "error", err.Error(), "retryIn", delay.String())
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			continue
		}
		delay = 0
		if !fw.conns.add(c) {
			_ = c.Close() // shutting down
			continue
		}
		fw.total.Inc()
		fw.active.Inc()
		go fw.handle(ctx, c)
	}
}

func (fw *forwarder) handle(ctx context.Context, local *net.TCPConn) {
	defer func() {
		fw.active.Dec()
		fw.conns.remove(local)
	}()
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	remote, err := fw.d.Dial(dctx, fw.f.Host, fw.f.Port)
	cancel()
	if err != nil {
		reason := DialReasonOther
		var de *dialError
		if errors.As(err, &de) {
			reason = de.reason
		}
		fw.dialErrs.WithLabelValues(reason).Inc()
		fw.logDialError(reason, err)
		// Reset rather than FIN: the client learns at once that the target
		// is unavailable, as with a refused connection.
		_ = local.SetLinger(0)
		_ = local.Close()
		return
	}
	fw.dialDur.Observe(time.Since(start).Seconds())
	fw.conns.attach(local, remote)
	pipe(local, remote, fw.bytesOut, fw.bytesIn, &fw.conns.moved)
}

func (fw *forwarder) logDialError(reason string, err error) {
	fw.logMu.Lock()
	now := time.Now()
	last, ok := fw.lastLogged[reason]
	if ok && now.Sub(last) < logBurstWindow {
		fw.suppressed[reason]++
		fw.logMu.Unlock()
		return
	}
	n := fw.suppressed[reason]
	fw.suppressed[reason] = 0
	fw.lastLogged[reason] = now
	fw.logMu.Unlock()
	fw.log.Info("dial to target failed; closing local connection",
		"target", fw.f.Target().String(), "reason", reason, "error", err.Error(), "suppressedSinceLastLog", n)
}

type closeWriter interface{ CloseWrite() error }

// pipe copies both ways with half-close: when one side finishes sending, the
// other side's write half is shut, and the connection ends when both
// directions are done. An error in either direction closes both sides.
func pipe(local *net.TCPConn, remote net.Conn, out, in prometheus.Counter, moved *atomic.Uint64) {
	errc := make(chan error, 2)
	go func() { errc <- copyHalf(remote, local, out, moved) }()
	go func() { errc <- copyHalf(local, remote, in, moved) }()
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil {
			break
		}
	}
	_ = local.Close()
	_ = remote.Close()
	// The other goroutine (if still running) stops on the closed conns.
}

func copyHalf(dst, src net.Conn, counter prometheus.Counter, moved *atomic.Uint64) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var err error
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
				break
			}
			counter.Add(float64(n))
			moved.Add(uint64(n))
		}
		if rerr != nil {
			if rerr != io.EOF {
				err = rerr
			}
			break
		}
	}
	if err == nil {
		if cw, ok := dst.(closeWriter); ok {
			_ = cw.CloseWrite()
		}
	}
	return err
}

// tunnelDialer resolves through Fly DNS and dials through the netstack.
type tunnelDialer struct {
	tun           *netTun
	res           *resolver
	lastHandshake func() time.Time
}

func (d *tunnelDialer) Dial(ctx context.Context, host string, port uint16) (net.Conn, error) {
	addrs, err := d.res.LookupAAAA(ctx, host)
	if err != nil {
		reason := DialReasonDNS
		if ctx.Err() != nil || !d.handshakeRecent() {
			reason = d.timeoutReason()
		}
		return nil, &dialError{reason: reason, err: err}
	}
	// Spread load over the answers; try at most two.
	if len(addrs) > 1 {
		addrs = append([]netip.Addr(nil), addrs...)
		rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	}
	var lastErr error
	for i, a := range addrs {
		if i == 2 {
			break
		}
		c, err := d.tun.dialTCP(ctx, netip.AddrPortFrom(a, port))
		if err == nil {
			return c, nil
		}
		lastErr = err
		var de *dialError
		if errors.As(err, &de) && de.reason == DialReasonTimeout {
			de.reason = d.timeoutReason()
			break
		}
	}
	return nil, lastErr
}

func (d *tunnelDialer) handshakeRecent() bool {
	h := d.lastHandshake()
	return !h.IsZero() && time.Since(h) < HandshakeStale
}

// timeoutReason blames the handshake when there has been none recently.
func (d *tunnelDialer) timeoutReason() string {
	if d.handshakeRecent() {
		return DialReasonTimeout
	}
	return DialReasonHandshake
}

// connSet tracks open connections for draining.
type connSet struct {
	mu     sync.Mutex
	conns  map[*net.TCPConn]net.Conn // local -> remote (nil until dialed)
	closed bool
	wg     sync.WaitGroup
	moved  atomic.Uint64 // bytes copied, both directions, all forwards
}

func newConnSet() *connSet { return &connSet{conns: map[*net.TCPConn]net.Conn{}} }

func (s *connSet) add(c *net.TCPConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = nil
	s.wg.Add(1)
	return true
}

func (s *connSet) attach(local *net.TCPConn, remote net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[local]; ok {
		s.conns[local] = remote
	}
	if s.closed && remote != nil {
		// Raced with a forced close: make sure this one goes too.
		_ = remote.Close()
		_ = local.Close()
	}
}

func (s *connSet) remove(c *net.TCPConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		s.wg.Done()
	}
}

func (s *connSet) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// drain refuses new connections, waits up to grace for open ones to end,
// then closes the rest. It returns how many were force-closed.
func (s *connSet) drain(grace time.Duration) int {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return 0
	case <-time.After(grace):
	}
	s.mu.Lock()
	n := len(s.conns)
	for l, r := range s.conns {
		_ = l.Close()
		if r != nil {
			_ = r.Close()
		}
	}
	s.mu.Unlock()
	<-done
	return n
}

var _ net.Conn = (*gonet.TCPConn)(nil)

package link

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// streamChunk is the most a stream direction reads at once: each read
	// is one "packet" for the Model (about a GSO segment's worth, 0.66 ms
	// at 200 Mbit/s).
	streamChunk = 16 << 10
	// streamSockBuf fixes the relay's own TCP receive buffers (no
	// autotuning) so that the relay's sockets hide at most this much queue
	// beyond the Model's bottleneck: 42 ms at 200 Mbit/s.
	streamSockBuf = 1 << 20
)

// ErrStreamLoss: a StreamRelay was asked to lose. A byte stream cannot
// lose part of itself; on a real path the loss is of IP packets under the
// TCP that carries the stream, which this relay does not see.
var ErrStreamLoss = errors.New("link: a stream relay cannot lose bytes (loss must be 0)")

// StreamRelay is a TCP relay on IPv4 loopback for the byte streams of
// WireGuard over WebSocket: each accepted connection is joined to a new
// connection to the target, and each direction's bytes are delayed and
// rate-capped by the same Model as the UDP relay's datagrams, in chunks of
// what one read returned (at most 16 KiB). The connections of a direction
// share its bottleneck, as flows on one link do. Where the UDP relay drops
// at the tail of the bottleneck queue, the stream relay stops reading
// until the queue has room (backpressure): the sender's TCP sees its
// window close instead of a loss. Loss must be 0 (ErrStreamLoss).
type StreamRelay struct {
	ln       *net.TCPListener
	target   netip.AddrPort
	up, down *streamDir

	mu      sync.Mutex
	conns   map[*net.TCPConn]struct{}
	closing atomic.Bool
	done    chan struct{} // closed by Close
	wg      sync.WaitGroup
	once    sync.Once
}

// streamDir is one direction's bottleneck, shared by its connections.
type streamDir struct {
	dirState               // over: reads held back at the hard memory limit
	held     atomic.Int64  // bytes on this direction's delay lines
	waits    atomic.Int64  // reads that waited for room in the queue
	done     chan struct{} // closed with the relay
}

func validStream(p Params) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.Loss != 0 {
		return ErrStreamLoss
	}
	return nil
}

// NewStreamRelay listens on 127.0.0.1 (a free port) and relays each
// connection to target, which must be a loopback address.
func NewStreamRelay(target netip.AddrPort, up, down Params) (*StreamRelay, error) {
	if !target.Addr().IsLoopback() {
		return nil, fmt.Errorf("link: target %s is not a loopback address", target)
	}
	if err := validPair(up, down, validStream); err != nil {
		return nil, err
	}
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("link: listen: %w", err)
	}
	r := &StreamRelay{ln: ln, target: target, conns: map[*net.TCPConn]struct{}{}, done: make(chan struct{})}
	r.up = &streamDir{dirState: dirState{model: NewModel(up)}, done: r.done}
	r.down = &streamDir{dirState: dirState{model: NewModel(down)}, done: r.done}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.acceptLoop()
	}()
	return r, nil
}

// Addr is where clients connect.
func (r *StreamRelay) Addr() netip.AddrPort { return r.ln.Addr().(*net.TCPAddr).AddrPort() }

// Set changes both directions' parameters for every connection, open or
// later; bytes already on the delay line keep their delivery times.
func (r *StreamRelay) Set(up, down Params) error {
	if err := validPair(up, down, validStream); err != nil {
		return err
	}
	r.up.set(up)
	r.down.set(down)
	return nil
}

// Stats returns both directions' counts since the last Set: Offered and
// Delivered count chunks (reads), OfferedBytes bytes; Overflow counts reads
// that waited at the hard memory limit.
func (r *StreamRelay) Stats() (up, down DirStats) { return r.up.stats(), r.down.stats() }

// Waits is how many reads of each direction waited for room in the
// bottleneck queue since the relay started (backpressure instead of
// drop-tail).
func (r *StreamRelay) Waits() (up, down int64) { return r.up.waits.Load(), r.down.waits.Load() }

// Close stops the relay, closes every connection and waits for its
// goroutines.
func (r *StreamRelay) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		r.closing.Store(true)
		r.mu.Unlock()
		close(r.done)
		r.ln.Close()
		r.mu.Lock()
		for c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return nil
}

func (r *StreamRelay) track(c *net.TCPConn, add bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if add {
		if r.closing.Load() {
			return false
		}
		r.conns[c] = struct{}{}
	} else {
		delete(r.conns, c)
	}
	return true
}

func (r *StreamRelay) acceptLoop() {
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := r.ln.AcceptTCP()
		if err != nil {
			if r.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (EMFILE, ECONNABORTED): not in a tight loop.
			select {
			case <-r.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		s, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(r.target))
		if err != nil {
			c.Close()
			continue
		}
		if !r.track(c, true) || !r.track(s, true) {
			c.Close()
			s.Close()
			r.track(c, false)
			continue
		}
		for _, x := range []*net.TCPConn{c, s} {
			_ = x.SetReadBuffer(streamSockBuf)
			_ = x.SetNoDelay(true)
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			r.join(c, s)
		}()
	}
}

// join relays one connection pair until both directions have ended.
func (r *StreamRelay) join(c, s *net.TCPConn) {
	var wg sync.WaitGroup
	var failed atomic.Bool
	fail := func() {
		if failed.CompareAndSwap(false, true) {
			c.Close()
			s.Close()
		}
	}
	for _, x := range []struct {
		src, dst *net.TCPConn
		d        *streamDir
	}{{c, s, r.up}, {s, c, r.down}} {
		l := newDelayLine(x.d)
		wg.Add(2)
		go func() {
			defer wg.Done()
			if !l.read(x.src) {
				fail()
			}
		}()
		go func() {
			defer wg.Done()
			if !l.send(x.dst) {
				fail()
			}
		}()
	}
	wg.Wait()
	fail()
	r.track(c, false)
	r.track(s, false)
}

type chunk struct {
	b   []byte
	due time.Time
}

// delayLine is one connection's direction: chunks read, each sent at the
// due time the direction's Model gave it.
type delayLine struct {
	d    *streamDir
	mu   sync.Mutex
	q    []chunk
	head int
	eof  bool          // the source ended: close the destination's write side once drained
	wake chan struct{} // a chunk arrived or eof
	gone chan struct{} // the sender stopped
	pool sync.Pool
}

func newDelayLine(d *streamDir) *delayLine {
	l := &delayLine{d: d, wake: make(chan struct{}, 1), gone: make(chan struct{})}
	l.pool.New = func() any { b := make([]byte, streamChunk); return &b }
	return l
}

func (l *delayLine) notify() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// pause sleeps for d or until the relay or the sender stops; false when
// it stopped.
func (l *delayLine) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.d.done:
		return false
	case <-l.gone:
		return false
	}
}

// read moves src's bytes onto the delay line until src ends (true) or
// fails or the relay stops (false).
func (l *delayLine) read(src *net.TCPConn) bool {
	defer func() {
		l.mu.Lock()
		l.eof = true
		l.mu.Unlock()
		l.notify()
	}()
	for {
		bp := l.pool.Get().(*[]byte)
		b := (*bp)[:streamChunk]
		l.d.mu.Lock()
		b = b[:min(len(b), l.d.model.Params().queue())]
		l.d.mu.Unlock()
		n, err := src.Read(b)
		if n > 0 && !l.admit(b[:n]) {
			return false
		}
		if n == 0 {
			l.pool.Put(bp)
		}
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// admit waits for room in the bottleneck queue (and under the hard
// memory limit), then queues b at the due time the Model gives it.
func (l *delayLine) admit(b []byte) bool {
	for waited := false; ; {
		if l.d.held.Load()+int64(len(b)) > hardLimit {
			l.d.mu.Lock()
			l.d.over++
			l.d.mu.Unlock()
			if !l.pause(time.Millisecond) {
				return false
			}
			continue
		}
		l.d.mu.Lock()
		now := time.Now()
		if wait := l.d.model.Room(now, len(b)); wait > 0 {
			l.d.mu.Unlock()
			if !waited {
				l.d.waits.Add(1)
				waited = true
			}
			if !l.pause(wait) {
				return false
			}
			continue
		}
		due, ok := l.d.model.Admit(now, len(b))
		l.d.mu.Unlock()
		if !ok {
			// Only loss or drop-tail refuse, and validStream and Room rule
			// both out: a refused chunk would corrupt the stream.
			return false
		}
		l.d.held.Add(int64(len(b)))
		l.mu.Lock()
		l.q = append(l.q, chunk{b: b, due: due})
		l.mu.Unlock()
		l.notify()
		return true
	}
}

// send writes each chunk to dst at its due time, on a locked OS thread
// sleeping with nanosleep as the UDP relay's sendLoop does. It returns
// true when the source ended and everything was delivered (then dst's
// write side is closed), false on a write error or when the relay stops.
func (l *delayLine) send(dst *net.TCPConn) bool {
	defer close(l.gone)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	var out net.Buffers
	var sent []chunk
	for {
		l.mu.Lock()
		if l.head == len(l.q) {
			l.q, l.head = l.q[:0], 0
			eof := l.eof
			l.mu.Unlock()
			if eof {
				_ = dst.CloseWrite()
				return true
			}
			select {
			case <-l.wake:
				continue
			case <-l.d.done:
				return false
			}
		}
		due := l.q[l.head].due
		l.mu.Unlock()
		if wait := time.Until(due); wait > 0 {
			ts := unix.NsecToTimespec(int64(wait))
			_ = unix.Nanosleep(&ts, nil) // EINTR: measured again
			select {
			case <-l.d.done:
				return false
			default:
			}
			continue
		}
		now := time.Now()
		out, sent = out[:0], sent[:0]
		l.mu.Lock()
		for l.head < len(l.q) && len(sent) < 64 && !l.q[l.head].due.After(now) {
			c := l.q[l.head]
			l.q[l.head] = chunk{}
			l.head++
			sent = append(sent, c)
			out = append(out, c.b)
		}
		if l.head > 1024 && l.head*2 > len(l.q) {
			n := copy(l.q, l.q[l.head:])
			clear(l.q[n:])
			l.q, l.head = l.q[:n], 0
		}
		l.mu.Unlock()
		l.d.mu.Lock()
		for _, c := range sent {
			l.d.late.add(now.Sub(c.due))
		}
		l.d.sent += int64(len(sent))
		l.d.mu.Unlock()
		var bytes int64
		for _, c := range sent {
			bytes += int64(len(c.b))
		}
		_, err := out.WriteTo(dst)
		l.d.held.Add(-bytes)
		for _, c := range sent {
			if cap(c.b) == streamChunk {
				b := c.b[:streamChunk]
				l.pool.Put(&b)
			}
		}
		if err != nil {
			return false
		}
	}
}

package wgws

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// KeepaliveAfter: a zero-length frame goes out when nothing was read or
// written for this long (flyctl's interval), so proxies and load balancers
// on the way keep the connection.
const KeepaliveAfter = time.Second

// messageReadLimit caps one WebSocket message. A frame never exceeds
// MaxDatagram+4 bytes; the margin lets a peer pack a few frames in one
// message.
const messageReadLimit = 1 << 20

// ErrWrongMessageType: a binary (or other non-text) message arrived.
var ErrWrongMessageType = errors.New("websocket message is not a text message")

// ErrorKind says where a connection failed, for metrics.
type ErrorKind int

// Error kinds.
const (
	ErrDial     ErrorKind = iota // connect, TLS, upgrade or magic
	ErrRead                      // the stream broke while reading
	ErrWrite                     // the stream broke while writing
	ErrProtocol                  // bad frame, wrong message type, bad magic
	ErrIdle                      // nothing came back while datagrams went out
	// NumErrorKinds is the number of kinds, for arrays indexed by kind.
	NumErrorKinds
)

func (k ErrorKind) String() string {
	if k < 0 || k >= NumErrorKinds {
		return "closed"
	}
	return [...]string{"dial", "read", "write", "protocol", "idle"}[k]
}

// noDeadline is the context of every read and write: a context that can
// end costs coder/websocket a timer registration per message; Fail closes
// the connection instead, which ends any read or write in progress.
var noDeadline = context.Background()

// Conn is one WebSocket carrying frames, client or server side. Reads come
// from a single goroutine; writes may come from several.
type Conn struct {
	ws   *websocket.Conn
	br   *bufio.Reader
	cork *CorkConn // may be nil

	wmu  sync.Mutex
	wbuf []byte

	lastIO atomic.Int64 // unix nanos of the last read or write

	failOnce sync.Once
	done     chan struct{}
	err      error // set before done closes
	kind     ErrorKind
}

// NewConn wraps an established WebSocket (after Dial or Accept, magic
// already exchanged). cork, if not nil, is the TCP connection under it, for
// WriteBatch. The connection lives until Fail or Close.
func NewConn(ws *websocket.Conn, cork *CorkConn) *Conn {
	ws.SetReadLimit(messageReadLimit)
	c := &Conn{ws: ws, cork: cork, done: make(chan struct{}), wbuf: make([]byte, 0, 2048)}
	c.br = bufio.NewReaderSize(&messageStream{c: c}, 64<<10)
	c.touch()
	return c
}

func (c *Conn) touch() { c.lastIO.Store(time.Now().UnixNano()) }

// messageStream reads the text messages of a WebSocket as one byte stream.
type messageStream struct {
	c   *Conn
	cur io.Reader
}

func (m *messageStream) Read(p []byte) (int, error) {
	for {
		if m.cur == nil {
			typ, r, err := m.c.ws.Reader(noDeadline)
			if err != nil {
				return 0, err
			}
			if typ != websocket.MessageText {
				return 0, fmt.Errorf("%w (got %v)", ErrWrongMessageType, typ)
			}
			m.cur = r
		}
		n, err := m.cur.Read(p)
		if errors.Is(err, io.EOF) {
			m.cur = nil
			err = nil
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
}

// ReadDatagram reads the next datagram into buf, skipping keepalives.
func (c *Conn) ReadDatagram(buf []byte) (int, error) {
	for {
		n, err := ReadFrame(c.br, buf)
		if err != nil {
			return 0, err
		}
		c.touch()
		if n > 0 {
			return n, nil
		}
	}
}

// ReadBatch reads at least one datagram and then whatever whole frames are
// already buffered, up to len(bufs).
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int) (int, error) {
	n, err := c.ReadDatagram(bufs[0])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	got := 1
	for got < len(bufs) && FrameBuffered(c.br) {
		n, err := ReadFrame(c.br, bufs[got])
		if err != nil {
			// Deliver what we have; the error comes back on the next read.
			return got, nil
		}
		if n > 0 {
			sizes[got] = n
			got++
		}
	}
	return got, nil
}

// WriteDatagram sends p as one frame in one text message.
func (c *Conn) WriteDatagram(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = AppendFrame(c.wbuf[:0], p)
	c.touch()
	return c.ws.Write(noDeadline, websocket.MessageText, c.wbuf)
}

// WriteBatch sends each datagram as its own frame and message, with one
// system call for the lot when the connection can be corked. It returns
// how many were sent.
func (c *Conn) WriteBatch(bufs [][]byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.cork != nil {
		c.cork.Cork()
	}
	c.touch()
	sent := 0
	var err error
	for _, p := range bufs {
		c.wbuf = AppendFrame(c.wbuf[:0], p)
		if err = c.ws.Write(noDeadline, websocket.MessageText, c.wbuf); err != nil {
			break
		}
		sent++
	}
	if c.cork != nil {
		if uerr := c.cork.Uncork(); uerr != nil && err == nil {
			err, sent = uerr, 0
		}
	}
	return sent, err
}

// KeepAlive writes a zero-length frame every KeepaliveAfter of silence
// until the connection ends.
func (c *Conn) KeepAlive() {
	t := time.NewTicker(KeepaliveAfter / 2)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, c.lastIO.Load())) < KeepaliveAfter {
			continue
		}
		if err := c.WriteDatagram(nil); err != nil {
			c.Fail(ErrWrite, err)
			return
		}
	}
}

// Fail ends the connection with err (the first call wins).
func (c *Conn) Fail(kind ErrorKind, err error) {
	c.failOnce.Do(func() {
		c.err, c.kind = err, kind
		_ = c.ws.CloseNow() // unblocks a read or write in progress
		close(c.done)
	})
}

// Close ends the connection without an error.
func (c *Conn) Close() { c.Fail(-1, nil) }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the connection ended (nil for Close), valid after Done.
func (c *Conn) Err() (ErrorKind, error) { return c.kind, c.err }

// DialOptions configures Dial.
type DialOptions struct {
	// URL is wss://<gateway host>:443/.
	URL string
	// Proxy picks an HTTPS proxy per request (http.ProxyFromEnvironment
	// honours HTTPS_PROXY and NO_PROXY); nil dials directly.
	Proxy func(*http.Request) (*url.URL, error)
	// DialContext overrides the TCP dialer (tests).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// GatewayURL is the WebSocket URL for a gateway host and port.
func GatewayURL(host string, port int) string {
	return (&url.URL{Scheme: "wss", Host: net.JoinHostPort(host, fmt.Sprint(port)), Path: "/"}).String()
}

// Dial connects to the gateway's WebSocket and writes the magic.
//
// The gateway's certificate is not verified, as flyctl does not: every
// datagram inside is a WireGuard message, authenticated and encrypted with
// the peer keys, so TLS adds no protection a man in the middle could take
// away; it only gets the traffic through egress that allows HTTPS alone.
func Dial(ctx context.Context, o DialOptions) (*Conn, error) {
	tr := &http.Transport{
		Proxy:                 o.Proxy,
		DialContext:           o.DialContext,
		TLSClientConfig:       insecureTLS(),
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		DisableKeepAlives:     true,
		ForceAttemptHTTP2:     false,
	}
	if tr.DialContext == nil {
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	}
	// One connection per Dial (no keep-alives): the last one dialled is
	// the WebSocket's.
	var cork *CorkConn
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cork = NewCorkConn(c)
		return cork, nil
	}
	defer tr.CloseIdleConnections()
	ws, resp, err := websocket.Dial(ctx, o.URL, &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: tr},
		HTTPHeader: http.Header{"Origin": []string{o.URL}},
	})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("websocket dial %s: %w", o.URL, err)
	}
	c := NewConn(ws, cork)
	var magic [4]byte
	binary.BigEndian.PutUint32(magic[:], Magic)
	if err := c.WriteRaw(magic[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("write websocket magic: %w", err)
	}
	return c, nil
}

// Accept upgrades a gateway-side request and reads the client's magic.
// cork, if not nil, is the TCP connection under the request.
func Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions, cork *CorkConn) (*Conn, error) {
	ws, err := websocket.Accept(w, r, opts)
	if err != nil {
		return nil, err
	}
	c := NewConn(ws, cork)
	if err := ReadMagic(c.br); err != nil {
		c.Fail(ErrProtocol, err)
		return nil, err
	}
	c.touch()
	return c, nil
}

// WriteRaw sends b as is in one text message: the magic, or (in test
// gateways) deliberately broken frames.
func (c *Conn) WriteRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.Write(noDeadline, websocket.MessageText, b)
}

// WriteBinary sends b in one binary message, which the framing forbids
// (test gateways use it).
func (c *Conn) WriteBinary(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.Write(noDeadline, websocket.MessageBinary, b)
}

func insecureTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true} //nolint:gosec // see Dial
}

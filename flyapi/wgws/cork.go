package wgws

import (
	"net"
	"sync"
)

// corkMax bounds what a corked connection holds before it writes anyway.
const corkMax = 256 << 10

// CorkConn is the TCP connection under the TLS of a WebSocket. Between Cork
// and Uncork it collects writes and sends them with one system call: a batch
// of datagrams from wireguard-go then costs one write instead of one per
// datagram (each is still its own WebSocket message and TLS record).
type CorkConn struct {
	net.Conn
	mu     sync.Mutex
	corked int
	buf    []byte
}

// NewCorkConn wraps c.
func NewCorkConn(c net.Conn) *CorkConn { return &CorkConn{Conn: c} }

// Write sends b, or keeps it until Uncork while corked.
func (c *CorkConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked == 0 {
		return c.Conn.Write(b)
	}
	c.buf = append(c.buf, b...)
	if len(c.buf) >= corkMax {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

func (c *CorkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > corkMax*2 {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// Cork starts collecting writes (calls nest).
func (c *CorkConn) Cork() {
	c.mu.Lock()
	c.corked++
	c.mu.Unlock()
}

// Uncork ends a Cork; the outermost one writes what was collected.
func (c *CorkConn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked--
	if c.corked > 0 {
		return nil
	}
	return c.flushLocked()
}

package sidecar

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The health and metrics servers listen on the pod IP (the kubelet probes
// it), so every pod in the cluster can reach them. These bounds keep a
// hostile neighbour from holding connections or memory: each connection
// lives a few seconds unless it keeps sending requests, one source address
// holds at most serveMaxConnsPerIP of them, and all sources together at most
// serveMaxConns. A connection over a limit is reset at once.
const (
	serveMaxConns          = 64
	serveMaxConnsPerIP     = 8
	serveReadHeaderTimeout = 2 * time.Second
	serveReadTimeout       = 3 * time.Second
	serveWriteTimeout      = 5 * time.Second
	serveIdleTimeout       = 5 * time.Second
	serveMaxHeaderBytes    = 4 << 10
	// serveMaxReason bounds the not-ready text /readyz returns.
	serveMaxReason = 512
)

// listenTCP binds ap. The IPv6 unspecified address [::] means every address
// family the pod has: one dual-stack socket where the kernel has IPv6 (so
// IPv6-only, dual-stack and IPv4 pods all work), 0.0.0.0 where it has none.
// Go's own "tcp" listen on [::] binds IPv4 only when the IPv4 loopback is
// missing, which is why the socket option is set here. 0.0.0.0 is IPv4 only.
func listenTCP(ap netip.AddrPort) (*net.TCPListener, error) {
	if ap.Addr() == netip.IPv6Unspecified() {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
			}); err != nil {
				return err
			}
			return serr
		}}
		l, err := lc.Listen(context.Background(), "tcp6", ap.String())
		if err == nil {
			return l.(*net.TCPListener), nil
		}
		if !errors.Is(err, syscall.EAFNOSUPPORT) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return nil, err
		}
		ap = netip.AddrPortFrom(netip.IPv4Unspecified(), ap.Port()) // no IPv6 in this pod
	}
	network := "tcp6"
	if ap.Addr().Is4() {
		network = "tcp4"
	}
	return net.ListenTCP(network, net.TCPAddrFromAddrPort(ap))
}

// newBoundedServer serves h on a listener with the bounds above.
func newBoundedServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: serveReadHeaderTimeout,
		ReadTimeout:       serveReadTimeout,
		WriteTimeout:      serveWriteTimeout,
		IdleTimeout:       serveIdleTimeout,
		MaxHeaderBytes:    serveMaxHeaderBytes,
		// A flood must not turn into a flood of log lines.
		ErrorLog: log.New(io.Discard, "", 0),
	}
}

// limitListener caps open connections in all and per source address.
type limitListener struct {
	*net.TCPListener
	max, perIP int
	onReject   func()

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int
}

func newLimitListener(l *net.TCPListener, max, perIP int, onReject func()) *limitListener {
	return &limitListener{TCPListener: l, max: max, perIP: perIP, onReject: onReject, byIP: map[netip.Addr]int{}}
}

// Accept returns the next connection within the limits; the others are
// reset without being read.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			return nil, err
		}
		ip := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		l.mu.Lock()
		ok := l.total < l.max && l.byIP[ip] < l.perIP
		if ok {
			l.total++
			l.byIP[ip]++
		}
		l.mu.Unlock()
		if !ok {
			_ = c.SetLinger(0)
			_ = c.Close()
			l.onReject()
			continue
		}
		return &limitedConn{TCPConn: c, release: func() { l.release(ip) }}, nil
	}
}

func (l *limitListener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

func (l *limitListener) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

type limitedConn struct {
	*net.TCPConn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(c.release)
	return err
}

// probeMux is the health listener's handler: /healthz and /readyz only,
// GET or HEAD, a few bytes each.
func (s *Sidecar) probeMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.healthy(); err != nil {
			plain(w, http.StatusServiceUnavailable, "unhealthy: "+err.Error())
			return
		}
		plain(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.ready.Load() {
			plain(w, http.StatusOK, "ok "+s.tctl.describe())
			return
		}
		s.stateMu.Lock()
		why := s.notReadyWhy
		s.stateMu.Unlock()
		if why == "" {
			why = "starting"
		}
		plain(w, http.StatusServiceUnavailable, "not ready: "+why+" ["+s.tctl.describe()+"]")
	})
	return mux
}

// metricsMux serves /metrics only, on the metrics listener.
func (s *Sidecar) metricsMux() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promHandler(s.m.reg))
	return mux
}

func plain(w http.ResponseWriter, code int, msg string) {
	if len(msg) > serveMaxReason {
		msg = msg[:serveMaxReason] + "…"
	}
	msg += "\n"
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg)
}

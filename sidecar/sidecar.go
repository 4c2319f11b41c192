// Package sidecar is the glaceon tunnel sidecar: userspace WireGuard
// (wireguard-go) on a tuned gVisor netstack, forwarding local TCP listeners to
// Fly apps resolved through Fly DNS inside the tunnel, with health, readiness,
// Prometheus metrics and graceful drain. It must not import anything from
// Kubernetes (see deps_test.go).
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/glaceon/glaceon/flyapi/wgquick"
)

const (
	// HandshakeStale: no handshake for this long means the tunnel is down
	// (also what `glaceon doctor pod` reports as stale).
	// WireGuard re-handshakes every 2 minutes while traffic (keepalives
	// included) flows, so a healthy tunnel stays well below it.
	HandshakeStale = 3 * time.Minute
	// probeName is asked for through the tunnel to prove DNS works (flyctl
	// uses the same name); any answer, NXDOMAIN included, counts.
	probeName = "_api.internal"
	// Probe cadence before the first success and afterwards.
	probeIntervalStarting = 100 * time.Millisecond
	probeInterval         = 2 * time.Second
	probeIntervalFailing  = 500 * time.Millisecond
	probeTimeout          = 2500 * time.Millisecond
	// failuresBeforeReconfigure: consecutive failed checks before the
	// watchdog re-resolves the endpoint and replaces the peer.
	failuresBeforeReconfigure = 3
	reconfigureBackoffMin     = 3 * time.Second
	reconfigureBackoffMax     = 30 * time.Second
	// idleRelease: quiet time after traffic before memory goes back to the OS.
	idleRelease = 5 * time.Second
)

// Sidecar is a running tunnel with its listeners and health server.
type Sidecar struct {
	opts    *Options
	log     logr.Logger
	m       *metrics
	tun     *tunnel
	tctl    *transportCtl
	res     *resolver
	dialer  *tunnelDialer
	fws     []*forwarder
	conns   *connSet
	health  *http.Server
	healthL *limitListener
	metrics *http.Server // nil unless --metrics-addr
	metricL *limitListener
	started time.Time

	// readiness state
	ready       atomic.Bool
	draining    atomic.Bool
	heartbeat   atomic.Int64 // unix nanos of the last watchdog round
	stateMu     sync.Mutex
	notReadyWhy string
	lastHS      atomic.Int64 // unix nanos of the last handshake, 0 = none
}

// New checks the config, builds the tunnel and binds every listener (so a
// port conflict fails here, before anything runs). Call Run next.
func New(opts *Options, cfg *wgquick.Config, log logr.Logger) (*Sidecar, error) {
	copied := *opts // the caller's options stay as they were
	opts = &copied
	if cfg.MTU != 0 && opts.MTU == DefaultMTU && cfg.MTU >= MinMTU && cfg.MTU <= MaxMTU {
		// An MTU line in the file applies unless the flag says otherwise.
		opts.MTU = cfg.MTU
	}
	dns := cfg.DNS
	if !dns.IsValid() {
		dns = wgquick.DNSServerFor(cfg.Address)
	}
	s := &Sidecar{opts: opts, log: log, conns: newConnSet(), started: time.Now()}
	s.m = newMetrics(s.handshakeAge)
	t, err := newTunnel(cfg, opts, log, s.m)
	if err != nil {
		return nil, err
	}
	s.tun = t
	s.tctl = newTransportCtl(t.mode, t, log, s.m.reg)
	s.res = newResolver(netip.AddrPortFrom(dns, 53), t.tun.dialUDP, func(r string) {
		s.m.dnsLookups.WithLabelValues(r).Inc()
	})
	s.res.dialTCP = func(ctx context.Context, ap netip.AddrPort) (net.Conn, error) { return t.tun.dialTCP(ctx, ap) }
	d := &tunnelDialer{tun: t.tun, res: s.res, lastHandshake: s.lastHandshake}
	s.dialer = d
	for _, f := range opts.Forwards {
		fw, err := newForwarder(f, d, s.m, log, s.conns)
		if err != nil {
			s.closeListeners()
			t.close()
			return nil, &UsageError{Field: "--forward", Msg: oneLine(fmt.Sprintf("cannot listen on %s: %v: pick a free address or port, or stop what holds it", f.Listen, errors.Unwrap(err)))}
		}
		s.fws = append(s.fws, fw)
	}
	hl, err := listenTCP(opts.HealthAddr)
	if err != nil {
		s.closeListeners()
		t.close()
		return nil, &UsageError{Field: "--health-addr", Msg: oneLine(fmt.Sprintf("cannot listen on %s: %v: pick a free port", opts.HealthAddr, errors.Unwrap(err)))}
	}
	s.healthL = newLimitListener(hl, serveMaxConns, serveMaxConnsPerIP, s.m.rejected.WithLabelValues("health").Inc)
	s.health = newBoundedServer(s.probeMux())
	if opts.MetricsAddr.IsValid() {
		ml, err := listenTCP(opts.MetricsAddr)
		if err != nil {
			s.closeListeners()
			_ = hl.Close()
			t.close()
			return nil, &UsageError{Field: "--metrics-addr", Msg: oneLine(fmt.Sprintf("cannot listen on %s: %v: pick a free port", opts.MetricsAddr, errors.Unwrap(err)))}
		}
		s.metricL = newLimitListener(ml, serveMaxConns, serveMaxConnsPerIP, s.m.rejected.WithLabelValues("metrics").Inc)
		s.metrics = newBoundedServer(s.metricsMux())
	}
	return s, nil
}

// MetricsAddr is where /metrics is served, "" when it is not.
func (s *Sidecar) MetricsAddr() string {
	if s.metricL == nil {
		return ""
	}
	return s.metricL.Addr().String()
}

// HealthAddr is where /healthz and /readyz are served.
func (s *Sidecar) HealthAddr() string { return s.healthL.Addr().String() }

// ListenAddrs are the bound forward addresses, in --forward order.
func (s *Sidecar) ListenAddrs() []string {
	out := make([]string, len(s.fws))
	for i, fw := range s.fws {
		out[i] = fw.ln.Addr().String()
	}
	return out
}

// Dial connects to host:port (a Fly private name) through the tunnel as a
// forward does: Fly DNS, then TCP through the netstack. The error starts
// with the reason glaceon_dial_errors_total counts (dns, refused, timeout,
// handshake, unreachable, other). `glaceon doctor --tunnel --target` uses
// it; it is not counted in the forwards' metrics.
func (s *Sidecar) Dial(ctx context.Context, host string, port uint16) (net.Conn, error) {
	return s.dialer.Dial(ctx, host, port)
}

// Ready reports what /readyz reports.
func (s *Sidecar) Ready() bool { return s.ready.Load() }

func (s *Sidecar) closeListeners() {
	for _, fw := range s.fws {
		_ = fw.ln.Close()
	}
}

// Run brings the tunnel up and serves until ctx is cancelled, then drains:
// listeners close, open connections get up to ShutdownGrace to finish, and
// Run returns nil.
func (s *Sidecar) Run(ctx context.Context) error {
	defer s.tun.close()
	s.tctl.initial()
	if err := s.tun.configure(ctx, false); err != nil {
		// Endpoint not resolvable yet: keep trying in the watchdog.
		s.log.Info("initial wireguard configuration failed; will retry", "error", err.Error())
	}
	if err := s.tun.dev.Up(); err != nil {
		s.closeListeners()
		_ = s.healthL.Close()
		if s.metricL != nil {
			_ = s.metricL.Close()
		}
		return fmt.Errorf("bring wireguard device up: %w", err)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.health.Serve(s.healthL); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error(err, "health server stopped")
		}
	}()
	if s.metrics != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.metrics.Serve(s.metricL); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error(err, "metrics server stopped")
			}
		}()
	}

	// dialCtx outlives ctx: a connection accepted before SIGTERM may still
	// be dialing; it gets the grace period too, then the dial is cancelled.
	dialCtx, cancelDials := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDials()
	for _, fw := range s.fws {
		wg.Add(1)
		fw.up.Store(true)
		go func() { defer wg.Done(); fw.serve(dialCtx) }()
	}
	s.log.Info("sidecar started", "forwards", len(s.fws), "healthAddr", s.HealthAddr(), "metricsAddr", s.MetricsAddr(),
		"mtu", s.opts.MTU, "localAddress", s.tun.cfg.Address.String(), "dns", s.res.server.String())

	wdCtx, stopWatchdog := context.WithCancel(ctx)
	wdDone := make(chan struct{})
	go func() { defer close(wdDone); s.watchdog(wdCtx) }()
	tcDone := make(chan struct{})
	go func() { defer close(tcDone); s.tctl.run(wdCtx, s.tun.lastHandshake) }()

	<-ctx.Done()

	// Drain.
	s.draining.Store(true)
	s.setReady(false, "shutting down")
	s.closeListeners()
	open := s.conns.count()
	s.log.Info("shutting down: listeners closed, draining connections", "open", open, "grace", s.opts.ShutdownGrace.String())
	forced := s.conns.drain(s.opts.ShutdownGrace)
	cancelDials()
	if forced > 0 {
		s.log.Info("grace period over; closed remaining connections", "closed", forced)
	}
	stopWatchdog()
	<-wdDone
	<-tcDone
	hctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = s.health.Shutdown(hctx)
	if s.metrics != nil {
		_ = s.metrics.Shutdown(hctx)
	}
	cancel()
	wg.Wait()
	s.log.Info("sidecar stopped")
	return nil
}

func (s *Sidecar) lastHandshake() time.Time {
	n := s.lastHS.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func (s *Sidecar) handshakeAge() float64 {
	h := s.lastHandshake()
	if h.IsZero() {
		return -1
	}
	return time.Since(h).Seconds()
}

func (s *Sidecar) setReady(ok bool, why string) {
	s.stateMu.Lock()
	s.notReadyWhy = why
	s.stateMu.Unlock()
	was := s.ready.Swap(ok)
	if ok {
		s.m.ready.Set(1)
	} else {
		s.m.ready.Set(0)
	}
	if ok && !was {
		s.log.Info("ready", "sinceStart", time.Since(s.started).String(), "endpoint", s.tun.endpoint(), "transport", s.tun.bind.Path().String())
	} else if !ok && was {
		s.log.Info("not ready", "reason", why)
	}
}

// watchdog probes the tunnel, keeps readiness current and repairs the peer
// when handshakes or DNS stop working; between probes it hands idle memory
// back to the OS.
func (s *Sidecar) watchdog(ctx context.Context) {
	mem := idleMemory{lastActivity: time.Now(), released: true}
	rep := repairState{backoff: reconfigureBackoffMin, last: time.Now()}
	everReady := false
	for {
		mem.release(s.conns.moved.Load())
		s.heartbeat.Store(time.Now().UnixNano())
		why := s.notReadyReasons(ctx)
		if ctx.Err() != nil {
			return
		}
		if len(why) == 0 {
			s.setReady(true, "")
			everReady = true
			rep.failures, rep.backoff = 0, reconfigureBackoffMin
		} else {
			s.setReady(false, strings.Join(why, "; "))
			s.repair(ctx, &rep, why)
		}
		interval := probeInterval
		switch {
		case !everReady:
			interval = probeIntervalStarting
		case rep.failures > 0:
			interval = probeIntervalFailing
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// idleMemory hands the memory a burst of traffic used back to the OS once
// no byte has moved for idleRelease (idle keep-alive connections may stay
// open). Idle RSS matters for a sidecar in every pod; the Go scavenger
// alone is slow to do it.
type idleMemory struct {
	lastMoved    uint64
	lastActivity time.Time
	released     bool
}

// release is called with the bytes moved so far on every watchdog round.
func (m *idleMemory) release(moved uint64) {
	if moved != m.lastMoved {
		m.lastMoved, m.lastActivity, m.released = moved, time.Now(), false
	} else if !m.released && time.Since(m.lastActivity) >= idleRelease {
		// Two collections: the first moves sync.Pool contents (packet
		// buffers) to the victim cache, the second frees them.
		runtime.GC()
		debug.FreeOSMemory()
		m.released = true
	}
}

// notReadyReasons probes the tunnel (handshake age, Fly DNS through it,
// the listeners) and says what is wrong; none means ready.
func (s *Sidecar) notReadyReasons(ctx context.Context) []string {
	if hs := s.tun.lastHandshake(); !hs.IsZero() {
		s.lastHS.Store(hs.UnixNano())
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	perr := s.res.Probe(pctx, probeName)
	cancel()
	if hs := s.tun.lastHandshake(); !hs.IsZero() {
		s.lastHS.Store(hs.UnixNano())
	}
	hs := s.lastHandshake()
	var why []string
	if hs.IsZero() {
		why = append(why, "no WireGuard handshake yet "+s.tctl.notReadyHint())
	} else if age := time.Since(hs); age > HandshakeStale {
		why = append(why, fmt.Sprintf("last WireGuard handshake %s ago %s", age.Round(time.Second), s.tctl.notReadyHint()))
	}
	if perr != nil {
		why = append(why, "Fly DNS not answering through the tunnel")
	}
	for _, fw := range s.fws {
		if !fw.up.Load() {
			why = append(why, "listener "+fw.f.Listen.String()+" is not accepting")
		}
	}
	return why
}

// repairState counts the failed checks in a row and when the peer was last
// replaced, so replacements back off.
type repairState struct {
	failures int
	backoff  time.Duration
	last     time.Time
}

// repair replaces the peer after failuresBeforeReconfigure failed checks
// in a row, at most once per (doubling) backoff.
func (s *Sidecar) repair(ctx context.Context, r *repairState, why []string) {
	r.failures++
	if r.failures < failuresBeforeReconfigure || time.Since(r.last) < r.backoff {
		return
	}
	s.log.Info("tunnel unhealthy; re-resolving endpoint and replacing peer",
		"reason", strings.Join(why, "; "), "failedChecks", r.failures, "endpoint", s.tun.endpoint())
	// Move on to the next resolved gateway address, if any: the current
	// one has stopped answering.
	if err := s.tun.configure(ctx, true); err != nil {
		s.log.Info("reconfiguration failed", "error", err.Error())
	}
	s.m.reconfigs.Inc()
	r.last = time.Now()
	r.backoff = min(r.backoff*2, reconfigureBackoffMax)
}

// healthy: the watchdog loop is alive and the netstack answers a local
// operation quickly. Never touches the network.
func (s *Sidecar) healthy() error {
	if hb := s.heartbeat.Load(); hb != 0 && time.Since(time.Unix(0, hb)) > probeInterval+probeTimeout+10*time.Second {
		return errors.New("watchdog stalled")
	}
	done := make(chan error, 1)
	go func() {
		c, err := s.tun.tun.dialUDP(netip.AddrPortFrom(s.res.server.Addr(), 9))
		if err == nil {
			_ = c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("netstack: %v", err)
		}
		return nil
	case <-time.After(time.Second):
		return errors.New("netstack not responding")
	}
}

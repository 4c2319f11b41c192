package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/device"

	"github.com/glaceon/glaceon/flyapi/target"
	"github.com/glaceon/glaceon/flyapi/udpbind"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	"github.com/glaceon/glaceon/flyapi/wgws"
	"github.com/glaceon/glaceon/sidecar/transport"
)

// Transport is how the sidecar reaches the Fly gateway.
type Transport string

// Transports.
const (
	// TransportAuto tries UDP, falls back to WebSocket when no handshake
	// comes back, and returns to UDP when it works again.
	TransportAuto Transport = "auto"
	// TransportUDP is plain WireGuard over UDP port 51820.
	TransportUDP Transport = "udp"
	// TransportWebSocket is WireGuard over wss://<gateway>:443/, as flyctl
	// does by default.
	TransportWebSocket Transport = "websocket"
)

// EnvWebSocketPort overrides the gateway's WebSocket port (443), for tests
// against a local gateway only; it sits next to flyapi.EnvGatewayPort.
const EnvWebSocketPort = "FLY_WG_WEBSOCKET_PORT"

// DefaultWebSocketPort is where Fly gateways serve WireGuard over WebSocket.
const DefaultWebSocketPort = 443

func parseTransport(v string) (Transport, error) {
	switch t := Transport(strings.ToLower(v)); t {
	case "":
		return TransportAuto, nil
	case TransportAuto, TransportUDP, TransportWebSocket:
		return t, nil
	}
	return "", fmt.Errorf("%q is not a transport: use auto (UDP, falling back to WebSocket), udp or websocket", v)
}

func webSocketPort(getenv func(string) string) (int, error) {
	v := strings.TrimSpace(getenv(EnvWebSocketPort))
	if v == "" {
		return DefaultWebSocketPort, nil
	}
	p, err := target.ParsePort(v)
	if err != nil {
		return 0, usageErr(EnvWebSocketPort, "%v (unset it: Fly gateways serve WebSockets on 443; it is for tests only)", err)
	}
	return int(p), nil
}

// Timing of the auto transport. Variables so that tests can shorten the
// return to UDP; nothing else changes them.
var (
	// udpFallbackAfter: no handshake over UDP for this long after starting
	// (or nothing received while sending, once up) → WebSocket.
	udpFallbackAfter = 3 * time.Second
	udpDeadAfter     = 5 * time.Second
	// wsDeadAfter: nothing received over the WebSocket while sending for
	// this long → drop and re-dial it. The watchdog's DNS probe every 2 s
	// keeps a healthy tunnel answering.
	wsDeadAfter = 8 * time.Second
	// udpRetryEvery: while on WebSocket, how often UDP is tried again.
	udpRetryEvery = 3 * time.Minute
	// udpProbeWindow: how long a probe waits for a handshake over UDP
	// (wireguard-go retries an unanswered initiation after 5 s, which
	// then goes over the WebSocket again).
	udpProbeWindow = 4 * time.Second
	// wsUnreachableAfter: in auto, a WebSocket that has not connected for
	// this long sends us back to UDP (where the watchdog tries the next
	// gateway address): both paths are then tried in turn.
	wsUnreachableAfter = 5 * time.Second
	transportTick      = 250 * time.Millisecond
)

// newTransportBind builds the Bind that carries WireGuard over UDP and/or
// the gateway's WebSocket at wss://<Endpoint host>:<port>/.
func newTransportBind(cfg *wgquick.Config, wsPort int, log logr.Logger) (*transport.Bind, string, error) {
	host, _, err := net.SplitHostPort(cfg.Endpoint)
	if err != nil {
		return nil, "", fmt.Errorf("endpoint %q: %w", cfg.Endpoint, err)
	}
	url := wgws.GatewayURL(host, wsPort)
	b := transport.New(transport.Options{
		UDP: udpbind.New(udpbind.Options{}),
		// HTTPS_PROXY / NO_PROXY, as flyctl honours them.
		Dial: wgws.DialOptions{URL: url, Proxy: http.ProxyFromEnvironment},
		Log:  log.WithName("websocket"),
	})
	return b, url, nil
}

// transportCtl picks the path for the mode and keeps it working.
type transportCtl struct {
	mode Transport
	bind *transport.Bind
	tun  *tunnel
	log  logr.Logger

	mu       sync.Mutex
	since    time.Time // current path chosen at
	lastWhy  string    // why the current path was chosen
	switches *prometheus.CounterVec
}

func newTransportCtl(mode Transport, t *tunnel, log logr.Logger, reg *prometheus.Registry) *transportCtl {
	c := &transportCtl{mode: mode, bind: t.bind, tun: t, log: log.WithName("transport"), since: time.Now()}
	c.switches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "glaceon_transport_switches_total",
		Help: "Times the sidecar moved WireGuard to another transport, by the transport moved to.",
	}, []string{"to"})
	reg.MustRegister(c.switches)
	b := t.bind
	for _, p := range []transport.Path{transport.PathUDP, transport.PathWebSocket} {
		labels := prometheus.Labels{"transport": p.String()}
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "glaceon_transport_current", ConstLabels: labels,
				Help: "1 for the transport WireGuard datagrams go out on, 0 for the other.",
			}, func() float64 {
				if b.Path() == p {
					return 1
				}
				return 0
			}),
			counterFunc("glaceon_transport_frames_total", "WireGuard datagrams per transport and direction (out: to the gateway).",
				prometheus.Labels{"transport": p.String(), "direction": "out"}, &b.Stats.FramesOut[p]),
			counterFunc("glaceon_transport_frames_total", "",
				prometheus.Labels{"transport": p.String(), "direction": "in"}, &b.Stats.FramesIn[p]),
			counterFunc("glaceon_transport_bytes_total", "WireGuard datagram bytes per transport and direction, without framing.",
				prometheus.Labels{"transport": p.String(), "direction": "out"}, &b.Stats.BytesOut[p]),
			counterFunc("glaceon_transport_bytes_total", "",
				prometheus.Labels{"transport": p.String(), "direction": "in"}, &b.Stats.BytesIn[p]),
		)
	}
	reg.MustRegister(
		counterFunc("glaceon_websocket_connects_total", "WebSocket connections to the gateway established.", nil, &b.Stats.WSConnects),
		counterFunc("glaceon_transport_dropped_total", "Datagrams dropped because their transport was not connected.", nil, &b.Stats.Dropped),
	)
	for k := wgws.ErrDial; k <= wgws.ErrIdle; k++ {
		reg.MustRegister(counterFunc("glaceon_websocket_errors_total",
			"WebSocket failures by stage (dial, read, write, protocol, idle).",
			prometheus.Labels{"stage": k.String()}, &b.Stats.WSErrors[k]))
	}
	return c
}

type loader interface{ Load() uint64 }

func counterFunc(name, help string, labels prometheus.Labels, v loader) prometheus.Collector {
	if help == "" {
		// Same metric family: client_golang wants the same help text.
		switch name {
		case "glaceon_transport_frames_total":
			help = "WireGuard datagrams per transport and direction (out: to the gateway)."
		case "glaceon_transport_bytes_total":
			help = "WireGuard datagram bytes per transport and direction, without framing."
		}
	}
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
		func() float64 { return float64(v.Load()) })
}

// initial sets the first path before the device comes up.
func (c *transportCtl) initial() {
	p := transport.PathUDP
	why := "transport udp"
	switch c.mode {
	case TransportWebSocket:
		p, why = transport.PathWebSocket, "transport websocket"
	case TransportAuto:
		why = "auto: trying udp first"
	}
	c.set(p, why, false)
}

func (c *transportCtl) set(p transport.Path, why string, count bool) {
	c.mu.Lock()
	c.since, c.lastWhy = time.Now(), why
	c.mu.Unlock()
	prev := c.bind.Path()
	c.bind.SetPath(p)
	if count && prev != p {
		c.switches.WithLabelValues(p.String()).Inc()
		c.log.Info("transport switched", "from", prev.String(), "to", p.String(), "reason", why)
	}
}

// describe is the transport part of /readyz and of not-ready reasons.
func (c *transportCtl) describe() string {
	p := c.bind.Path()
	s := "transport=" + p.String()
	if c.mode == TransportAuto {
		s += " (auto)"
	}
	if p == transport.PathWebSocket && !c.bind.WebSocketConnected() {
		s += ", websocket connecting"
	}
	return s
}

// notReadyHint explains a missing handshake with the transport in mind.
func (c *transportCtl) notReadyHint() string {
	switch {
	case c.mode == TransportUDP:
		return "over udp to " + c.tun.endpoint() + ": UDP to the gateway may be blocked; use --transport auto or websocket"
	case c.bind.Path() == transport.PathWebSocket && !c.bind.WebSocketConnected():
		return "over websocket " + c.tun.wsURL + ": not connected (check egress to port 443 and HTTPS_PROXY)"
	}
	return "over " + c.bind.Path().String()
}

// run keeps the chosen path healthy; in auto mode it falls back to the
// WebSocket and comes back to UDP.
func (c *transportCtl) run(ctx context.Context, lastHandshake func() time.Time) {
	if c.mode == TransportUDP {
		return // the watchdog alone: nothing to switch to
	}
	var probeAt, nextProbe time.Time
	t := time.NewTicker(transportTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		c.mu.Lock()
		since := c.since
		c.mu.Unlock()
		switch c.bind.Path() {
		case transport.PathUDP:
			hs := lastHandshake()
			switch {
			case !c.bind.HasUDPTarget():
				c.set(transport.PathWebSocket, "no UDP address for the gateway", true)
			case hs.IsZero() && now.Sub(since) >= udpFallbackAfter:
				c.set(transport.PathWebSocket, fmt.Sprintf("no handshake over udp within %s", udpFallbackAfter), true)
			case silent(c.bind, transport.PathUDP, udpDeadAfter, since):
				c.set(transport.PathWebSocket, fmt.Sprintf("nothing received over udp for %s", udpDeadAfter), true)
			default:
				continue
			}
			nextProbe = now.Add(udpRetryEvery)
		case transport.PathWebSocket:
			if c.bind.WebSocketConnected() && silent(c.bind, transport.PathWebSocket, wsDeadAfter, since) {
				c.bind.ResetWebSocket(fmt.Errorf("nothing received for %s", wsDeadAfter))
				c.mu.Lock()
				c.since = now // give the next connection its own time
				c.mu.Unlock()
			}
			if c.mode != TransportAuto {
				continue
			}
			if up := c.bind.WebSocketUpAt(); now.Sub(since) >= wsUnreachableAfter && now.Sub(up) >= wsUnreachableAfter {
				c.bind.StopProbe()
				probeAt = time.Time{}
				c.set(transport.PathUDP, fmt.Sprintf("websocket not connected for %s", wsUnreachableAfter), true)
				continue
			}
			if nextProbe.IsZero() {
				nextProbe = now.Add(udpRetryEvery)
			}
			switch {
			case !probeAt.IsZero() && c.bind.ProbeSucceeded():
				c.bind.StopProbe()
				probeAt = time.Time{}
				nextProbe = now.Add(udpRetryEvery)
				c.set(transport.PathUDP, "handshake over udp works again", true)
			case !probeAt.IsZero() && now.Sub(probeAt) >= udpProbeWindow:
				c.bind.StopProbe()
				probeAt = time.Time{}
				nextProbe = now.Add(udpRetryEvery)
				c.log.V(1).Info("udp still blocked; staying on websocket")
			case probeAt.IsZero() && !now.Before(nextProbe):
				if !c.bind.HasUDPTarget() {
					// Resolve again: the name may work now.
					_ = c.tun.resolveUDP(ctx)
				}
				if c.bind.HasUDPTarget() {
					c.bind.StartProbe()
					probeAt = now
					c.tun.initiateHandshake()
				} else {
					nextProbe = now.Add(udpRetryEvery)
				}
			}
		}
	}
}

// silent: datagrams went out over p recently but nothing came back for d
// (and the path has been in use for at least d), while the receivers sat
// waiting: a stalled consumer on our side is not a dead path.
func silent(b *transport.Bind, p transport.Path, d time.Duration, since time.Time) bool {
	now := time.Now()
	if now.Sub(since) < d || !b.Idle(p) {
		return false
	}
	in, out := b.LastIn(p), b.LastOut(p)
	if in.Before(since) {
		in = since
	}
	return !out.IsZero() && now.Sub(out) < d && now.Sub(in) >= d
}

// initiateHandshake starts a WireGuard handshake now (rate-limited by
// wireguard-go to one per 5 s); the current session stays in use meanwhile.
func (t *tunnel) initiateHandshake() {
	if p := t.dev.LookupPeer(device.NoisePublicKey(t.cfg.PeerPublicKey)); p != nil {
		_ = p.SendHandshakeInitiation(false)
	}
}

var errNoUDP = errors.New("no UDP address for the gateway")

// resolveUDP tries once more to give the bind a UDP address (after the
// first resolution failed). Only the endpoint changes: the session stays.
func (t *tunnel) resolveUDP(ctx context.Context) error {
	eps, err := t.resolveEndpoint(ctx)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.endpoints, t.current = eps, 0
	t.mu.Unlock()
	if err := t.dev.IpcSet(fmt.Sprintf("public_key=%s\nupdate_only=true\nendpoint=%s\n", t.cfg.PeerPublicKey.Hex(), eps[0])); err != nil {
		return fmt.Errorf("set udp endpoint: %w", err)
	}
	if !t.bind.HasUDPTarget() {
		return errNoUDP
	}
	return nil
}

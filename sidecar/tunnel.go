package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"

	"github.com/glaceon/glaceon/flyapi/wgquick"
	"github.com/glaceon/glaceon/sidecar/transport"
)

// tunnel is the wireguard-go device on top of our netstack, plus the state
// the watchdog needs (endpoint candidates, which one is in use).
type tunnel struct {
	cfg *wgquick.Config
	tun *netTun
	dev *device.Device
	log logr.Logger
	m   *metrics

	lookupHost func(ctx context.Context, host string) ([]netip.Addr, error)

	mode  Transport
	bind  *transport.Bind // UDP and WebSocket paths (transport.go)
	wsURL string

	mu        sync.Mutex
	endpoints []netip.AddrPort // resolved candidates, preferred first
	current   int              // index into endpoints
}

func newTunnel(cfg *wgquick.Config, opts *Options, log logr.Logger, m *metrics) (*tunnel, error) {
	tuning := opts.Tuning
	tuning.MTU, tuning.Local = opts.MTU, cfg.Address
	bind, wsURL, err := newTransportBind(cfg, opts.WebSocketPort, log)
	if err != nil {
		return nil, err
	}
	t, err := newNetTun(tuning)
	if err != nil {
		return nil, err
	}
	wlog := log.WithName("wireguard")
	logger := &device.Logger{
		Verbosef: func(format string, args ...any) {
			if v := wlog.V(1); v.Enabled() {
				v.Info("wireguard-go", "detail", fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) {
			wlog.Info("wireguard-go error", "detail", fmt.Sprintf(format, args...))
		},
	}
	var b conn.Bind = bind
	if t.gate != nil {
		b = &gatedBind{Bind: bind, gate: t.gate, out: t.outGate}
	}
	dev := device.NewDevice(t, b, logger)
	mode := opts.Transport
	if mode == "" {
		mode = TransportAuto
	}
	return &tunnel{cfg: cfg, tun: t, dev: dev, log: log, m: m, lookupHost: defaultLookupHost,
		mode: mode, bind: bind, wsURL: wsURL}, nil
}

func defaultLookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// resolveEndpoint turns the config's host:port into IP candidates. IPv4
// comes first: it is what most cluster egress can route.
func (t *tunnel) resolveEndpoint(ctx context.Context) ([]netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(t.cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", t.cfg.Endpoint, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("endpoint %q: bad port", t.cfg.Endpoint)
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		addrs, err = t.lookupHost(ctx, host)
		if err != nil || len(addrs) == 0 {
			t.m.resolutions.WithLabelValues("error").Inc()
			if err == nil {
				err = errors.New("no addresses")
			}
			return nil, fmt.Errorf("resolve endpoint host %q: %w", host, err)
		}
	}
	t.m.resolutions.WithLabelValues("ok").Inc()
	var v4, v6 []netip.AddrPort
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if seen[a] {
			continue
		}
		seen[a] = true
		if a.Is4() {
			v4 = append(v4, netip.AddrPortFrom(a, uint16(port)))
		} else {
			v6 = append(v6, netip.AddrPortFrom(a, uint16(port)))
		}
	}
	return append(v4, v6...), nil
}

// configure (re)writes the peer. With rotate, the next endpoint candidate is
// used; with a fresh resolution, the list is refreshed first. The peer is
// replaced, so the next packet starts a new handshake at once.
func (t *tunnel) configure(ctx context.Context, rotate bool) error {
	var eps []netip.AddrPort
	err := errNoUDP
	if t.mode != TransportWebSocket {
		// WebSocket alone never needs the gateway's address: the HTTPS
		// proxy, if any, resolves it.
		eps, err = t.resolveEndpoint(ctx)
	}
	t.mu.Lock()
	if err == nil {
		prev := netip.AddrPort{}
		if t.current < len(t.endpoints) {
			prev = t.endpoints[t.current]
		}
		t.endpoints = eps
		t.current = 0
		for i, e := range eps {
			if e == prev {
				t.current = i
			}
		}
	} else if len(t.endpoints) == 0 {
		t.mu.Unlock()
		if t.mode == TransportUDP {
			return err
		}
		// The WebSocket URL stands for the gateway until a UDP address is
		// known (auto retries the resolution while on WebSocket).
		if serr := t.setPeer(t.wsURL); serr != nil {
			return serr
		}
		if t.mode == TransportAuto {
			return err
		}
		return nil
	} else {
		t.log.Info("endpoint re-resolution failed; keeping previous addresses", "error", err.Error())
	}
	if rotate && len(t.endpoints) > 0 {
		t.current = (t.current + 1) % len(t.endpoints)
	}
	ep := t.endpoints[t.current]
	t.mu.Unlock()
	return t.setPeer(ep.String())
}

// setPeer replaces the peer with endpoint ep (an IP:port or the WebSocket
// URL).
func (t *tunnel) setPeer(ep string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\n", t.cfg.PrivateKey.Hex())
	b.WriteString("replace_peers=true\n")
	fmt.Fprintf(&b, "public_key=%s\n", t.cfg.PeerPublicKey.Hex())
	fmt.Fprintf(&b, "endpoint=%s\n", ep)
	keepalive := t.cfg.PersistentKeepalive
	if keepalive <= 0 {
		keepalive = 15 // a long-lived sidecar behind NAT needs one
	}
	fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", keepalive)
	b.WriteString("replace_allowed_ips=true\n")
	for _, p := range t.cfg.AllowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", p.String())
	}
	if err := t.dev.IpcSet(b.String()); err != nil {
		// UAPI errors may quote the offending line: never let a key through.
		msg := strings.ReplaceAll(err.Error(), t.cfg.PrivateKey.Hex(), "<redacted>")
		return fmt.Errorf("configure wireguard peer: %s", msg)
	}
	t.mu.Lock()
	n := len(t.endpoints)
	t.mu.Unlock()
	t.log.Info("wireguard peer configured", "endpoint", ep, "candidates", n, "transport", string(t.mode))
	return nil
}

func (t *tunnel) endpoint() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.current < len(t.endpoints) {
		return t.endpoints[t.current].String()
	}
	return ""
}

// lastHandshake returns the time of the last completed handshake (zero if
// none). It reads the UAPI state; the private key in that text is never kept
// or logged.
func (t *tunnel) lastHandshake() time.Time {
	var sec, nsec int64
	var buf bytes.Buffer
	if err := t.dev.IpcGetOperation(&buf); err != nil {
		return time.Time{}
	}
	defer clear(buf.Bytes()[:buf.Cap()]) // the text holds the private key
	// Lines are read in place: a Scanner or string conversion would copy
	// the private key where clear cannot reach it. Only the two numbers
	// become strings.
	for line := range bytes.Lines(buf.Bytes()) {
		k, v, _ := bytes.Cut(bytes.TrimRight(line, "\n"), []byte("="))
		switch {
		case bytes.Equal(k, []byte("last_handshake_time_sec")):
			sec, _ = strconv.ParseInt(string(v), 10, 64)
		case bytes.Equal(k, []byte("last_handshake_time_nsec")):
			nsec, _ = strconv.ParseInt(string(v), 10, 64)
		}
	}
	if sec == 0 && nsec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, nsec)
}

func (t *tunnel) close() {
	t.dev.Close() // closes the tun (and so the netstack) too
}

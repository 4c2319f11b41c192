package sidecar

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/glaceon/glaceon/flyapi/target"
)

// Defaults for the command line.
const (
	DefaultHealthAddr    = "127.0.0.1:9901"
	DefaultMTU           = 1420
	DefaultShutdownGrace = 25 * time.Second
	MinMTU               = 1280 // IPv6 minimum
	MaxMTU               = 9000
)

// Forward is one LISTEN=TARGET mapping (the grammar is package target's).
type Forward = target.Forward

// Options is the parsed command line.
type Options struct {
	WGConfig   string
	Forwards   []Forward
	HealthAddr netip.AddrPort
	// MetricsAddr serves /metrics; the zero value (the default) serves
	// them nowhere, since they name the Fly hosts the pod reaches.
	MetricsAddr   netip.AddrPort
	MTU           int
	ShutdownGrace time.Duration
	LogLevel      string // debug, info, error
	// Transport is auto, udp or websocket (see transport.go).
	Transport Transport
	// WebSocketPort is the gateway's WebSocket port: 443, or
	// $FLY_WG_WEBSOCKET_PORT for tests against a local double.
	WebSocketPort int
	// Tuning overrides netstack defaults, for benchmarks and debugging only
	// (env GLACEON_TUNING, e.g. "gro=0,rcvbuf=4194304,sndbuf=1048576,cc=reno,sack=0,rack=1,minrto=50ms,keepalive=30s,inflight=off").
	Tuning netStackOptions
}

// UsageError is a bad flag, environment variable or config value. Its message
// is a single line that names the field and says how to fix it.
type UsageError struct {
	Field string // e.g. "--forward", "GLACEON_FORWARD", "--wg-config"
	Msg   string // what is wrong and how to fix it
}

func (e *UsageError) Error() string { return e.Field + ": " + e.Msg }

func usageErr(field, format string, args ...any) *UsageError {
	return &UsageError{Field: field, Msg: oneLine(fmt.Sprintf(format, args...))}
}

// oneLine keeps messages on one line whatever the input contained.
func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(s)
}

// Env names. Each flag has one; a flag given on the command line wins.
const (
	EnvWGConfig      = "GLACEON_WG_CONFIG"
	EnvForward       = "GLACEON_FORWARD"
	EnvHealthAddr    = "GLACEON_HEALTH_ADDR"
	EnvMetricsAddr   = "GLACEON_METRICS_ADDR"
	EnvMTU           = "GLACEON_MTU"
	EnvShutdownGrace = "GLACEON_SHUTDOWN_GRACE"
	EnvLogLevel      = "GLACEON_LOG_LEVEL"
	EnvTuning        = "GLACEON_TUNING"
	EnvTransport     = "GLACEON_TRANSPORT"
)

// ParseOptions parses the command line (without the program name) and the
// environment (getenv may be nil). Every error is a *UsageError.
func ParseOptions(args []string, getenv func(string) string) (*Options, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	f, err := parseFlags(args)
	if err != nil {
		return nil, err
	}
	pick := func(flagName, flagVal, env string) (field, val string) {
		if flagVal != "" {
			return "--" + flagName, flagVal
		}
		if v := strings.TrimSpace(getenv(env)); v != "" {
			return env, v
		}
		return "--" + flagName, ""
	}

	o := &Options{}
	_, v := pick("wg-config", f.wgConfig, EnvWGConfig)
	if v == "" {
		return nil, usageErr("--wg-config", "missing: give the path of the wg-quick file, e.g. --wg-config /etc/glaceon/wg.conf (or set %s)", EnvWGConfig)
	}
	o.WGConfig = v
	if o.Forwards, err = parseForwards(f.forwards, getenv); err != nil {
		return nil, err
	}
	if err := o.parseListenAddrs(f, pick); err != nil {
		return nil, err
	}
	if err := o.parseLimits(f, pick); err != nil {
		return nil, err
	}

	field, v := pick("transport", f.transport, EnvTransport)
	if o.Transport, err = parseTransport(v); err != nil {
		return nil, usageErr(field, "%v", err)
	}
	if o.WebSocketPort, err = webSocketPort(getenv); err != nil {
		return nil, err
	}
	if v := strings.TrimSpace(getenv(EnvTuning)); v != "" {
		t, err := parseTuning(v)
		if err != nil {
			return nil, usageErr(EnvTuning, "%v: unset it or use e.g. gro=0,rcvbuf=4194304,sndbuf=1048576,cc=reno,sack=0", err)
		}
		o.Tuning = t
	}
	return o, nil
}

// flagValues are the command line's values as given; empty means the
// flag was not given, so its environment variable or default applies.
type flagValues struct {
	wgConfig, healthAddr, metricsAddr, mtu, grace, logLevel, transport string
	forwards                                                           []string
}

// pickFunc returns the field (flag or environment variable) a setting
// came from and its value: the flag's if given, else the variable's.
type pickFunc func(flagName, flagVal, env string) (field, val string)

func parseFlags(args []string) (*flagValues, error) {
	fs := flag.NewFlagSet("glaceon-sidecar", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := &flagValues{}
	fs.StringVar(&f.wgConfig, "wg-config", "", "path of the wg-quick file (env "+EnvWGConfig+")")
	fs.StringVar(&f.healthAddr, "health-addr", "", "address for /healthz and /readyz; [::] is every address family the pod has (default "+DefaultHealthAddr+"; env "+EnvHealthAddr+")")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "address for /metrics (default: not served; env "+EnvMetricsAddr+")")
	fs.StringVar(&f.mtu, "mtu", "", "tunnel MTU (default 1420; env "+EnvMTU+")")
	fs.StringVar(&f.grace, "shutdown-grace", "", "how long open connections may finish after SIGTERM (default 25s; env "+EnvShutdownGrace+")")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info or error (default info; env "+EnvLogLevel+")")
	fs.StringVar(&f.transport, "transport", "", "auto, udp or websocket (default auto; env "+EnvTransport+")")
	fs.Func("forward", "LISTEN=TARGET, repeatable, e.g. 127.0.0.2:80=myapp.flycast:80 (env "+EnvForward+", comma-separated)", func(s string) error {
		f.forwards = append(f.forwards, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return nil, flagError(err)
	}
	if fs.NArg() > 0 {
		return nil, usageErr("arguments", "unexpected argument %q: every setting is a flag, e.g. --forward 127.0.0.2:80=myapp.flycast:80", fs.Arg(0))
	}
	return f, nil
}

// parseForwards parses the --forward flags or, when none is given,
// $GLACEON_FORWARD; no two may listen on the same address and port.
func parseForwards(forwards []string, getenv func(string) string) ([]Forward, error) {
	field := "--forward"
	if len(forwards) == 0 {
		if env := strings.TrimSpace(getenv(EnvForward)); env != "" {
			field = EnvForward
			for _, f := range strings.Split(env, ",") {
				if f = strings.TrimSpace(f); f != "" {
					forwards = append(forwards, f)
				}
			}
		}
	}
	if len(forwards) == 0 {
		return nil, usageErr("--forward", "missing: give at least one LISTEN=TARGET, e.g. --forward 127.0.0.2:80=myapp.flycast:80 (or set %s)", EnvForward)
	}
	var out []Forward
	seen := map[netip.AddrPort]string{}
	for _, s := range forwards {
		f, err := target.ParseForward(s)
		if err != nil {
			return nil, usageErr(field, "%s", err.Error())
		}
		if prev, ok := seen[f.Listen]; ok {
			return nil, usageErr(field, "duplicate listen address %s (in %q and %q): give each forward its own LISTEN address or port", f.Listen, prev, s)
		}
		for other, prev := range seen {
			if other.Port() == f.Listen.Port() && (other.Addr().IsUnspecified() || f.Listen.Addr().IsUnspecified()) {
				return nil, usageErr(field, "listen addresses %q and %q overlap (a wildcard address takes the port on every address): use different ports", prev, s)
			}
		}
		seen[f.Listen] = s
		out = append(out, f)
	}
	return out, nil
}

// parseListenAddrs sets the health and metrics addresses, which must not
// be a forward's listen address (o.Forwards is parsed) nor each other.
func (o *Options) parseListenAddrs(f *flagValues, pick pickFunc) error {
	forwarded := func(ap netip.AddrPort) bool {
		for _, fw := range o.Forwards {
			if fw.Listen == ap {
				return true
			}
		}
		return false
	}
	field, v := pick("health-addr", f.healthAddr, EnvHealthAddr)
	if v == "" {
		v = DefaultHealthAddr
	}
	ap, err := target.ParseListenAddr(v)
	if err != nil {
		return usageErr(field, "%s", err.Error())
	}
	if forwarded(ap) {
		return usageErr(field, "%s is also a forward's listen address: pick another port for health", ap)
	}
	o.HealthAddr = ap

	field, v = pick("metrics-addr", f.metricsAddr, EnvMetricsAddr)
	if v != "" {
		ap, err := target.ParseListenAddr(v)
		if err != nil {
			return usageErr(field, "%s", err.Error())
		}
		if forwarded(ap) || ap == o.HealthAddr {
			return usageErr(field, "%s is also a forward's or the health listen address: pick another port for metrics", ap)
		}
		o.MetricsAddr = ap
	}
	return nil
}

// parseLimits sets the MTU, the shutdown grace and the log level, each
// from its flag, its environment variable or its default.
func (o *Options) parseLimits(f *flagValues, pick pickFunc) error {
	field, v := pick("mtu", f.mtu, EnvMTU)
	o.MTU = DefaultMTU
	if v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < MinMTU || n > MaxMTU {
			return usageErr(field, "%q is not a valid MTU: give a number from %d to %d (default %d; use 1280 if the path is tunnelled again)", v, MinMTU, MaxMTU, DefaultMTU)
		}
		o.MTU = n
	}

	field, v = pick("shutdown-grace", f.grace, EnvShutdownGrace)
	o.ShutdownGrace = DefaultShutdownGrace
	if v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > time.Hour {
			return usageErr(field, "%q is not a valid duration: give e.g. 25s or 2m (0s to close connections at once, at most 1h)", v)
		}
		o.ShutdownGrace = d
	}

	field, v = pick("log-level", f.logLevel, EnvLogLevel)
	switch strings.ToLower(v) {
	case "":
		o.LogLevel = "info"
	case "debug", "info", "error":
		o.LogLevel = strings.ToLower(v)
	default:
		return usageErr(field, "%q is not a log level: use debug, info or error", v)
	}
	return nil
}

func parseTuning(s string) (netStackOptions, error) {
	var t netStackOptions
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return t, fmt.Errorf("%q is not key=value", kv)
		}
		switch k {
		case "gro", "sack", "rack":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return t, fmt.Errorf("%s=%q is not a boolean", k, v)
			}
			switch k {
			case "gro":
				t.DisableGRO = !b
			case "sack":
				t.DisableSACK = !b
			case "rack":
				t.EnableRACK = b
			}
		case "rcvbuf", "sndbuf":
			n, err := strconv.Atoi(v)
			if err != nil || n < 64<<10 || n > 64<<20 {
				return t, fmt.Errorf("%s=%q must be bytes from 65536 to 67108864", k, v)
			}
			if k == "rcvbuf" {
				t.RecvBufMax = n
			} else {
				t.SendBufMax = n
			}
		case "inflight":
			n, err := strconv.Atoi(v)
			if v == "off" {
				n, err = -1, nil
			}
			if err != nil || n == 0 || n < -1 || n > 65536 {
				return t, fmt.Errorf("inflight=%q must be off or a packet count from 1 to 65536", v)
			}
			t.InFlight = n
		case "keepalive":
			d, err := time.ParseDuration(v)
			if err != nil || d < 100*time.Millisecond || d > time.Hour {
				return t, fmt.Errorf("keepalive=%q must be a duration from 100ms to 1h", v)
			}
			t.KeepaliveIdle = d
		case "minrto":
			d, err := time.ParseDuration(v)
			if err != nil || d < 10*time.Millisecond || d > time.Second {
				return t, fmt.Errorf("minrto=%q must be a duration from 10ms to 1s", v)
			}
			t.MinRTO = d
		case "cc":
			if v != "reno" && v != "cubic" {
				return t, fmt.Errorf("cc=%q: use reno or cubic", v)
			}
			t.Congestion = v
		default:
			return t, fmt.Errorf("unknown key %q", k)
		}
	}
	return t, nil
}

// flagError turns the flag package's messages into a UsageError.
func flagError(err error) error {
	msg := err.Error()
	if errors.Is(err, flag.ErrHelp) {
		return usageErr("--help", "flags: --wg-config PATH --forward LISTEN=TARGET (repeatable) [--health-addr %s] [--metrics-addr IP:PORT] [--mtu %d] [--shutdown-grace %s] [--log-level info] [--transport auto]", DefaultHealthAddr, DefaultMTU, DefaultShutdownGrace)
	}
	// "flag provided but not defined: -x" / "flag needs an argument: -x" /
	// "invalid value ... for flag -x: ..."
	name := "flags"
	if i := strings.LastIndex(msg, ": -"); i >= 0 && strings.HasPrefix(msg, "flag") {
		name = "-" + strings.TrimLeft(msg[i+2:], "-")
		name = "-" + name
	}
	switch {
	case strings.HasPrefix(msg, "flag provided but not defined"):
		return usageErr(name, "unknown flag: the flags are --wg-config, --forward, --health-addr, --metrics-addr, --mtu, --shutdown-grace, --log-level, --transport")
	case strings.HasPrefix(msg, "flag needs an argument"):
		return usageErr(name, "needs a value, e.g. %s=VALUE", name)
	}
	return usageErr(name, "%s", msg)
}

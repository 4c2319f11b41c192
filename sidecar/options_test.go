package sidecar

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseOptionsDefaults(t *testing.T) {
	o, err := ParseOptions([]string{"--wg-config", "/x.conf", "--forward", "127.0.0.2:80=app.flycast:80", "--forward=127.0.0.3:5432=DB.Internal.:5432"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.WGConfig != "/x.conf" || o.MTU != 1420 || o.HealthAddr != netip.MustParseAddrPort("127.0.0.1:9901") || o.ShutdownGrace != DefaultShutdownGrace || o.LogLevel != "info" {
		t.Fatalf("defaults: %+v", o)
	}
	if len(o.Forwards) != 2 || o.Forwards[1].Host != "db.internal" || o.Forwards[1].Port != 5432 || o.Forwards[1].Listen != netip.MustParseAddrPort("127.0.0.3:5432") {
		t.Fatalf("forwards: %+v", o.Forwards)
	}
	if got := o.Forwards[0].String(); got != "127.0.0.2:80=app.flycast:80" {
		t.Fatalf("name %q", got)
	}
}

func TestParseOptionsEnv(t *testing.T) {
	env := envMap(map[string]string{
		EnvWGConfig:      "/env.conf",
		EnvForward:       " 127.0.0.2:80=a.flycast:80 , 0.0.0.0:8080=b.internal:8080,",
		EnvHealthAddr:    "127.0.0.1:9999",
		EnvMTU:           "1280",
		EnvShutdownGrace: "3s",
		EnvLogLevel:      "DEBUG",
	})
	o, err := ParseOptions(nil, env)
	if err != nil {
		t.Fatal(err)
	}
	if o.WGConfig != "/env.conf" || len(o.Forwards) != 2 || o.MTU != 1280 || o.ShutdownGrace != 3*time.Second || o.LogLevel != "debug" || o.HealthAddr.Port() != 9999 {
		t.Fatalf("%+v", o)
	}
	// Flags win over env, and --forward replaces GLACEON_FORWARD.
	o, err = ParseOptions([]string{"--wg-config=/flag.conf", "--forward", "127.0.0.9:1=c.flycast:1", "--mtu", "1400"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if o.WGConfig != "/flag.conf" || len(o.Forwards) != 1 || o.Forwards[0].Host != "c.flycast" || o.MTU != 1400 {
		t.Fatalf("%+v", o)
	}
}

func TestParseOptionsErrors(t *testing.T) {
	base := []string{"--wg-config", "/x.conf"}
	fw := func(s ...string) []string {
		out := append([]string(nil), base...)
		for _, f := range s {
			out = append(out, "--forward", f)
		}
		return out
	}
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		field string
		want  string
	}{
		{"no config", []string{"--forward", "127.0.0.2:80=a.flycast:80"}, nil, "--wg-config", "missing"},
		{"no forward", base, nil, "--forward", "missing"},
		{"no equals", fw("127.0.0.2:80"), nil, "--forward", "LISTEN=TARGET"},
		{"public target", fw("127.0.0.2:80=example.com:80"), nil, "--forward", ".flycast or .internal"},
		{"target no port", fw("127.0.0.2:80=a.flycast"), nil, "--forward", "HOST:PORT"},
		{"target port 0", fw("127.0.0.2:80=a.flycast:0"), nil, "--forward", "from 1 to 65535"},
		{"target port big", fw("127.0.0.2:80=a.flycast:65536"), nil, "--forward", "from 1 to 65535"},
		{"listen port big", fw("127.0.0.2:70000=a.flycast:80"), nil, "--forward", "from 1 to 65535"},
		{"listen name", fw("localhost:80=a.flycast:80"), nil, "--forward", "IP literal"},
		{"listen v6 no brackets", fw("::1:80=a.flycast:80"), nil, "--forward", "IP:PORT"},
		{"bad label", fw("127.0.0.2:80=a..flycast:80"), nil, "--forward", "label"},
		{"bad char", fw("127.0.0.2:80=a_b!.flycast:80"), nil, "--forward", "not a DNS label"},
		{"duplicate", fw("127.0.0.2:80=a.flycast:80", "127.0.0.2:80=b.flycast:80"), nil, "--forward", "duplicate listen address"},
		{"wildcard overlap", fw("127.0.0.2:80=a.flycast:80", "0.0.0.0:80=b.flycast:80"), nil, "--forward", "overlap"},
		{"env forward bad", base, map[string]string{EnvForward: "127.0.0.2:80=a.com:80"}, EnvForward, ".flycast"},
		{"mtu", append(fw("127.0.0.2:80=a.flycast:80"), "--mtu", "100"), nil, "--mtu", "1280"},
		{"mtu env", fw("127.0.0.2:80=a.flycast:80"), map[string]string{EnvMTU: "abc"}, EnvMTU, "MTU"},
		{"health", append(fw("127.0.0.2:80=a.flycast:80"), "--health-addr", "nohost"), nil, "--health-addr", "IP:PORT"},
		{"health clash", append(fw("127.0.0.2:80=a.flycast:80"), "--health-addr", "127.0.0.2:80"), nil, "--health-addr", "forward"},
		{"metrics", append(fw("127.0.0.2:80=a.flycast:80"), "--metrics-addr", "nohost"), nil, "--metrics-addr", "IP:PORT"},
		{"metrics env", fw("127.0.0.2:80=a.flycast:80"), map[string]string{EnvMetricsAddr: "1.2.3.4"}, EnvMetricsAddr, "IP:PORT"},
		{"metrics on health", append(fw("127.0.0.2:80=a.flycast:80"), "--health-addr", "127.0.0.1:9901", "--metrics-addr", "127.0.0.1:9901"), nil, "--metrics-addr", "health"},
		{"metrics on a forward", append(fw("127.0.0.2:80=a.flycast:80"), "--metrics-addr", "127.0.0.2:80"), nil, "--metrics-addr", "forward"},
		{"keepalive tuning", fw("127.0.0.2:80=a.flycast:80"), map[string]string{EnvTuning: "keepalive=1ms"}, EnvTuning, "100ms to 1h"},
		{"inflight tuning", fw("127.0.0.2:80=a.flycast:80"), map[string]string{EnvTuning: "inflight=0"}, EnvTuning, "off or a packet count"},
		{"minrto tuning", fw("127.0.0.2:80=a.flycast:80"), map[string]string{EnvTuning: "minrto=1ms"}, EnvTuning, "10ms to 1s"},
		{"rack tuning", fw("127.0.0.2:80=a.flycast:80"), map[string]string{EnvTuning: "rack=yes"}, EnvTuning, "not a boolean"},
		{"grace", append(fw("127.0.0.2:80=a.flycast:80"), "--shutdown-grace", "soon"), nil, "--shutdown-grace", "duration"},
		{"log level", append(fw("127.0.0.2:80=a.flycast:80"), "--log-level", "loud"), nil, "--log-level", "debug, info or error"},
		{"unknown flag", append(base, "--nope"), nil, "--nope", "unknown flag"},
		{"flag without value", []string{"--wg-config"}, nil, "--wg-config", "needs a value"},
		{"positional", append(fw("127.0.0.2:80=a.flycast:80"), "extra"), nil, "arguments", "unexpected"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseOptions(c.args, envMap(c.env))
			ue, ok := err.(*UsageError)
			if !ok {
				t.Fatalf("err = %T %v, want *UsageError", err, err)
			}
			if ue.Field != c.field || !strings.Contains(ue.Msg, c.want) {
				t.Fatalf("got %q, want field %q and %q", ue.Error(), c.field, c.want)
			}
			if strings.ContainsAny(ue.Error(), "\n\r") {
				t.Fatalf("message spans lines: %q", ue.Error())
			}
		})
	}
}

func FuzzParseOptions(f *testing.F) {
	f.Add("--wg-config /x --forward 127.0.0.2:80=a.flycast:80", "")
	f.Add("--mtu 1280 --health-addr [::1]:9", "127.0.0.2:80=a.flycast:80,127.0.0.3:80=b.internal:80")
	f.Add("--shutdown-grace 1m --log-level error -wg-config=y", "")
	f.Fuzz(func(t *testing.T, args, envForward string) {
		o, err := ParseOptions(strings.Fields(args), envMap(map[string]string{EnvForward: envForward, EnvWGConfig: "/cfg"}))
		if err != nil {
			ue, ok := err.(*UsageError)
			if !ok {
				t.Fatalf("error %T %v is not a *UsageError", err, err)
			}
			if strings.ContainsAny(ue.Error(), "\n\r") {
				t.Fatalf("multi-line error %q", ue.Error())
			}
			return
		}
		if len(o.Forwards) == 0 || o.MTU < MinMTU || o.MTU > MaxMTU || o.WGConfig == "" {
			t.Fatalf("accepted invalid options %+v", o)
		}
	})
}

func TestParseOptionsServeAddrs(t *testing.T) {
	base := []string{"--wg-config", "/w.conf", "--forward", "127.0.0.2:80=a.flycast:80"}
	o, err := ParseOptions(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.MetricsAddr.IsValid() || o.HealthAddr.String() != DefaultHealthAddr {
		t.Errorf("defaults: metrics %v, health %v; want metrics off and health on %s", o.MetricsAddr, o.HealthAddr, DefaultHealthAddr)
	}
	o, err = ParseOptions(append(base, "--health-addr", "[::]:9901"), envMap(map[string]string{EnvMetricsAddr: "[::]:9902", EnvTuning: "keepalive=2s,rack=1,minrto=40ms"}))
	if err != nil {
		t.Fatal(err)
	}
	if o.HealthAddr.String() != "[::]:9901" || o.MetricsAddr.String() != "[::]:9902" || o.Tuning.KeepaliveIdle != 2*time.Second {
		t.Errorf("got health %v, metrics %v, keepalive %v", o.HealthAddr, o.MetricsAddr, o.Tuning.KeepaliveIdle)
	}
	if !o.Tuning.EnableRACK || o.Tuning.MinRTO != 40*time.Millisecond {
		t.Errorf("tuning rack=1,minrto=40ms: got RACK %v, min RTO %v", o.Tuning.EnableRACK, o.Tuning.MinRTO)
	}
}

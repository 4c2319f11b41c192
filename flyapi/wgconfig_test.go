package flyapi

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/glaceon/glaceon/flyapi/wgquick"
)

const testPrivB64 = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=" // RFC 7748 Alice private key

func mustKey(t *testing.T, s string) wgquick.Key {
	t.Helper()
	k, err := wgquick.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// goldenFlyConf is byte for byte what flyctl's generateWgConf template
// produces for testCreatedPeer and testPrivB64.
const goldenFlyConf = `
[Interface]
PrivateKey = dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=
Address = fdaa:0:18:a7b:d6b:0:a:2/120
DNS = fdaa:0:18::3

[Peer]
PublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=
AllowedIPs = fdaa:0:18::/48
Endpoint = ord1.gateway.6pn.dev:51820
PersistentKeepalive = 15

`

func testCreatedPeer(t *testing.T) CreatedPeer {
	return CreatedPeer{
		Name:             "k8s-default-app-x1",
		PeerIP:           netip.MustParseAddr("fdaa:0:18:a7b:d6b:0:a:2"),
		EndpointHost:     "ord1.gateway.6pn.dev",
		GatewayPublicKey: mustKey(t, testGWKey),
	}
}

func TestRenderGolden(t *testing.T) {
	cfg, err := NewWireGuardConfig(mustKey(t, testPrivB64), testCreatedPeer(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(cfg.Render()); got != goldenFlyConf {
		t.Fatalf("Render mismatch\n got: %q\nwant: %q", got, goldenFlyConf)
	}
	if cfg.MTU != 0 || cfg.PersistentKeepalive != wgquick.DefaultKeepalive {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
	parsed, err := wgquick.Parse([]byte(goldenFlyConf))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(parsed, cfg) {
		t.Fatalf("parse(golden) = %#v, want %#v", parsed, cfg)
	}
	if string(parsed.Render()) != goldenFlyConf {
		t.Fatal("render(parse(golden)) != golden")
	}
}

func TestNewWireGuardConfig(t *testing.T) {
	priv := mustKey(t, testPrivB64)
	t.Run("custom port and IPv6 endpoint", func(t *testing.T) {
		p := testCreatedPeer(t)
		p.EndpointHost = "2001:db8::1"
		cfg, err := NewWireGuardConfig(priv, p, 40000)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Endpoint != "[2001:db8::1]:40000" {
			t.Fatalf("Endpoint = %q", cfg.Endpoint)
		}
		if _, err := wgquick.Parse(cfg.Render()); err != nil {
			t.Fatalf("rendered config does not parse: %v", err)
		}
	})
	t.Run("localhost endpoint", func(t *testing.T) {
		p := testCreatedPeer(t)
		p.EndpointHost = "localhost"
		cfg, err := NewWireGuardConfig(priv, p, 12345)
		if err != nil || cfg.Endpoint != "localhost:12345" {
			t.Fatalf("cfg %v err %v", cfg, err)
		}
	})
	bad := []struct {
		name string
		mod  func(*CreatedPeer, *wgquick.Key, *int)
		want string
	}{
		{"port out of range", func(p *CreatedPeer, k *wgquick.Key, port *int) { *port = 70000 }, "out of range"},
		{"zero private key", func(p *CreatedPeer, k *wgquick.Key, port *int) { *k = wgquick.Key{} }, "private key"},
		{"ipv4 peer", func(p *CreatedPeer, k *wgquick.Key, port *int) { p.PeerIP = netip.MustParseAddr("10.0.0.2") }, "not an IPv6"},
		{"empty endpoint", func(p *CreatedPeer, k *wgquick.Key, port *int) { p.EndpointHost = "" }, "endpoint host"},
		{"zero gateway key", func(p *CreatedPeer, k *wgquick.Key, port *int) { p.GatewayPublicKey = wgquick.Key{} }, "PublicKey"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			p, k, port := testCreatedPeer(t), priv, 0
			tt.mod(&p, &k, &port)
			if _, err := NewWireGuardConfig(k, p, port); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

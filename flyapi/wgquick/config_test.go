package wgquick

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

const (
	testGWKey   = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
	testPrivB64 = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=" // RFC 7748 Alice private key
	testPubB64  = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
)

func mustKey(t *testing.T, s string) Key {
	t.Helper()
	k, err := ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// goldenFlyConf is byte for byte what flyctl's generateWgConf template
// produces (leading newline, blank line between sections, trailing blank line).
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

// goldenConfig is the Config goldenFlyConf holds.
func goldenConfig(t *testing.T) *Config {
	t.Helper()
	return &Config{
		PrivateKey:          mustKey(t, testPrivB64),
		Address:             netip.MustParseAddr("fdaa:0:18:a7b:d6b:0:a:2"),
		DNS:                 netip.MustParseAddr("fdaa:0:18::3"),
		PeerPublicKey:       mustKey(t, testGWKey),
		AllowedIPs:          []netip.Prefix{netip.MustParsePrefix("fdaa:0:18::/48")},
		Endpoint:            "ord1.gateway.6pn.dev:51820",
		PersistentKeepalive: DefaultKeepalive,
	}
}

func TestParseGolden(t *testing.T) {
	parsed, err := Parse([]byte(goldenFlyConf))
	if err != nil {
		t.Fatal(err)
	}
	if want := goldenConfig(t); !reflect.DeepEqual(parsed, want) {
		t.Fatalf("parse(golden) = %#v, want %#v", parsed, want)
	}
	if string(parsed.Render()) != goldenFlyConf {
		t.Fatal("render(parse(golden)) != golden")
	}
}

func TestPrefix48AndDNS(t *testing.T) {
	tests := []struct{ ip, prefix, dns string }{
		{"fdaa:0:18:a7b:d6b:0:a:2", "fdaa:0:18::/48", "fdaa:0:18::3"},
		{"fdaa:74:b6b5:a7b:35c:20a7:c070:5c02", "fdaa:74:b6b5::/48", "fdaa:74:b6b5::3"},
		{"fdaa:0:4:a7b:ab6:0:a:102", "fdaa:0:4::/48", "fdaa:0:4::3"},
	}
	for _, tt := range tests {
		ip := netip.MustParseAddr(tt.ip)
		if got := Prefix48(ip).String(); got != tt.prefix {
			t.Errorf("Prefix48(%s) = %s, want %s", tt.ip, got, tt.prefix)
		}
		if got := DNSServerFor(ip).String(); got != tt.dns {
			t.Errorf("DNSServerFor(%s) = %s, want %s", tt.ip, got, tt.dns)
		}
	}
	if Prefix48(netip.MustParseAddr("10.1.2.3")).IsValid() || DNSServerFor(netip.Addr{}).IsValid() {
		t.Error("IPv4/invalid addresses must give zero values")
	}
}

func TestParseVariants(t *testing.T) {
	want := func(t *testing.T) *Config {
		return goldenConfig(t)
	}
	tests := []struct {
		name string
		in   string
		mod  func(*Config)
	}{
		{"comments, CRLF, lower-case keys, no spaces", "# made by hand\r\n[interface]\r\nprivatekey=" + testPrivB64 + " # secret\r\naddress=fdaa:0:18:a7b:d6b:0:a:2/120\r\ndns=fdaa:0:18::3\r\n\r\n[PEER]\r\npublickey=" + testGWKey + "\r\nallowedips=fdaa:0:18::/48\r\nendpoint=ord1.gateway.6pn.dev:51820\r\npersistentkeepalive=15\r\n", nil},
		{"BOM, peer first, tabs", "\xef\xbb\xbf[Peer]\n\tPublicKey\t=\t" + testGWKey + "\nAllowedIPs = fdaa:0:18::/48\nEndpoint = ord1.gateway.6pn.dev:51820\nPersistentKeepalive = 15\n[Interface]\nPrivateKey = " + testPrivB64 + "\nAddress = fdaa:0:18:a7b:d6b:0:a:2/120\nDNS = fdaa:0:18::3\n", nil},
		{"DNS derived when absent, MTU, ListenPort ignored, keepalive off", "[Interface]\nPrivateKey = " + testPrivB64 + "\nAddress = fdaa:0:18:a7b:d6b:0:a:2/120\nMTU = 1280\nListenPort = 51000\n[Peer]\nPublicKey = " + testGWKey + "\nAllowedIPs = fdaa:0:18::/48\nEndpoint = ord1.gateway.6pn.dev:51820\nPersistentKeepalive = off\n",
			func(c *Config) { c.MTU = 1280; c.PersistentKeepalive = 0 }},
		{"AllowedIPs list with spaces, repeated line, unmasked prefix", "[Interface]\nPrivateKey = " + testPrivB64 + "\nAddress = fdaa:0:18:a7b:d6b:0:a:2\nDNS = fdaa:0:18::3\n[Peer]\nPublicKey = " + testGWKey + "\nAllowedIPs = fdaa:0:18::5/48 ,  fdaa:0:19::/48\nAllowedIPs = 10.0.0.0/8\nEndpoint = ord1.gateway.6pn.dev:51820\nPersistentKeepalive = 15\n",
			func(c *Config) {
				c.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("fdaa:0:18::/48"), netip.MustParsePrefix("fdaa:0:19::/48"), netip.MustParsePrefix("10.0.0.0/8")}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			w := want(t)
			if tt.mod != nil {
				tt.mod(w)
			}
			if !reflect.DeepEqual(got, w) {
				t.Fatalf("got  %#v\nwant %#v", got, w)
			}
			again, err := Parse(got.Render())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip: %v\n%#v\n%#v", err, again, got)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	iface := "[Interface]\nPrivateKey = " + testPrivB64 + "\nAddress = fdaa:0:18:a7b:d6b:0:a:2/120\nDNS = fdaa:0:18::3\n"
	peer := "[Peer]\nPublicKey = " + testGWKey + "\nAllowedIPs = fdaa:0:18::/48\nEndpoint = ord1.gateway.6pn.dev:51820\nPersistentKeepalive = 15\n"
	// Line numbers: iface occupies lines 1-4, peer lines 5-9 when concatenated.
	good := iface + peer
	replace := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("test bug: %q not in config", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	tests := []struct {
		name  string
		in    string
		line  int
		field string
		msg   string
	}{
		{"bad public key length", replace("PublicKey = "+testGWKey, "PublicKey = AAAA"), 6, "PublicKey", "decodes to 3 bytes"},
		{"bad private key", replace("PrivateKey = "+testPrivB64, "PrivateKey = nope"), 2, "PrivateKey", "base64"},
		{"zero public key", replace("PublicKey = "+testGWKey, "PublicKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), 6, "PublicKey", "all-zero"},
		{"unknown key", replace("DNS = fdaa:0:18::3", "Colour = blue"), 4, "Colour", "unknown key"},
		{"peer key in interface", replace("DNS = fdaa:0:18::3", "Endpoint = x:1"), 4, "Endpoint", "belongs in [Peer]"},
		{"interface key in peer", replace("PersistentKeepalive = 15", "Address = fdaa::1"), 9, "Address", "belongs in [Interface]"},
		{"duplicate key", replace("DNS = fdaa:0:18::3", "DNS = fdaa:0:18::3\nDNS = fdaa:0:18::4"), 5, "DNS", "duplicate key (first on line 4)"},
		{"second peer", good + peer, 10, "[Peer]", "second [Peer]"},
		{"second interface", good + iface, 10, "[Interface]", "second [Interface]"},
		{"missing peer section", iface, 0, "[Peer]", "section missing"},
		{"missing interface section", peer, 0, "[Interface]", "section missing"},
		{"missing private key", replace("PrivateKey = "+testPrivB64+"\n", ""), 1, "PrivateKey", "missing"},
		{"missing address", replace("Address = fdaa:0:18:a7b:d6b:0:a:2/120\n", ""), 1, "Address", "missing"},
		{"missing public key", replace("PublicKey = "+testGWKey+"\n", ""), 5, "PublicKey", "missing"},
		{"missing endpoint", replace("Endpoint = ord1.gateway.6pn.dev:51820\n", ""), 5, "Endpoint", "missing"},
		{"missing allowed ips", replace("AllowedIPs = fdaa:0:18::/48\n", ""), 5, "AllowedIPs", "missing"},
		{"bad address", replace("fdaa:0:18:a7b:d6b:0:a:2/120", "fdaa::zz/120"), 3, "Address", "not an IP"},
		{"ipv4 address", replace("fdaa:0:18:a7b:d6b:0:a:2/120", "10.0.0.2/24"), 3, "Address", "not an IPv6"},
		{"two addresses", replace("fdaa:0:18:a7b:d6b:0:a:2/120", "fdaa::2/120, fdaa::3/120"), 3, "Address", "more than one"},
		{"dns search domain", replace("DNS = fdaa:0:18::3", "DNS = fdaa:0:18::3, internal"), 4, "DNS", "more than one"},
		{"bad allowed ip", replace("AllowedIPs = fdaa:0:18::/48", "AllowedIPs = fdaa:0:18::/48, nope"), 7, "AllowedIPs", "\"nope\""},
		{"empty allowed ip entry", replace("AllowedIPs = fdaa:0:18::/48", "AllowedIPs = fdaa:0:18::/48,,"), 7, "AllowedIPs", "extra comma"},
		{"port too big", replace(":51820", ":65536"), 8, "Endpoint", "out of range"},
		{"port zero", replace(":51820", ":0"), 8, "Endpoint", "out of range"},
		{"endpoint without port", replace(":51820", ""), 8, "Endpoint", "not host:port"},
		{"ipv6 endpoint without brackets", replace("ord1.gateway.6pn.dev:51820", "fdaa::1:51820"), 8, "Endpoint", "not host:port"},
		{"bad endpoint host", replace("ord1.gateway.6pn.dev", "ord 1.gateway"), 8, "Endpoint", "host"},
		{"keepalive too big", replace("PersistentKeepalive = 15", "PersistentKeepalive = 70000"), 9, "PersistentKeepalive", "out of range"},
		{"keepalive negative", replace("PersistentKeepalive = 15", "PersistentKeepalive = -1"), 9, "PersistentKeepalive", "out of range"},
		{"mtu too small", replace("DNS = fdaa:0:18::3", "DNS = fdaa:0:18::3\nMTU = 500"), 5, "MTU", "1280..65535"},
		{"listen port bad", replace("DNS = fdaa:0:18::3", "DNS = fdaa:0:18::3\nListenPort = 99999"), 5, "ListenPort", "out of range"},
		{"post up rejected", replace("DNS = fdaa:0:18::3", "DNS = fdaa:0:18::3\nPostUp = iptables -A"), 5, "PostUp", "not supported"},
		{"preshared key rejected", replace("PersistentKeepalive = 15", "PresharedKey = "+testGWKey), 9, "PresharedKey", "not supported"},
		{"key outside section", "PrivateKey = " + testPrivB64 + "\n" + good, 1, "PrivateKey", "outside a section"},
		{"unknown section", replace("[Peer]", "[Peers]"), 5, "section", "unknown section"},
		{"unterminated section", replace("[Peer]", "[Peer"), 5, "section", "missing ']'"},
		{"no equals", replace("DNS = fdaa:0:18::3", "DNS fdaa:0:18::3"), 4, "line", "Key = Value"},
		{"too big", strings.Repeat("#\n", MaxSize), 0, "", "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("parsed: %v", cfg)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a *ConfigError", err, err)
			}
			if ce.Line != tt.line || ce.Field != tt.field {
				t.Fatalf("got line %d field %q, want line %d field %q (%v)", ce.Line, ce.Field, tt.line, tt.field, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.msg) {
				t.Fatalf("error %q does not contain %q", msg, tt.msg)
			}
			if tt.line > 0 && !strings.HasPrefix(msg, "wg config line ") {
				t.Fatalf("error %q does not start with the line", msg)
			}
			if !strings.Contains(msg, "fix") {
				t.Fatalf("error %q has no fix", msg)
			}
			if strings.Contains(msg, testPrivB64) {
				t.Fatalf("error leaks the private key: %q", msg)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	base := func(t *testing.T) *Config {
		return goldenConfig(t)
	}
	if err := base(t).Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		field string
		mod   func(*Config)
	}{
		{"PrivateKey", func(c *Config) { c.PrivateKey = Key{} }},
		{"Address", func(c *Config) { c.Address = netip.Addr{} }},
		{"Address", func(c *Config) { c.Address = netip.MustParseAddr("10.0.0.1") }},
		{"DNS", func(c *Config) { c.DNS = netip.Addr{} }},
		{"PublicKey", func(c *Config) { c.PeerPublicKey = Key{} }},
		{"AllowedIPs", func(c *Config) { c.AllowedIPs = nil }},
		{"AllowedIPs", func(c *Config) { c.AllowedIPs = []netip.Prefix{{}} }},
		{"Endpoint", func(c *Config) { c.Endpoint = "" }},
		{"Endpoint", func(c *Config) { c.Endpoint = "host" }},
		{"PersistentKeepalive", func(c *Config) { c.PersistentKeepalive = -5 }},
		{"MTU", func(c *Config) { c.MTU = 100 }},
	}
	for _, tt := range tests {
		c := base(t)
		tt.mod(c)
		err := c.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tt.field || ce.Line != 0 {
			t.Errorf("Validate after changing %s: %v", tt.field, err)
		}
	}
}

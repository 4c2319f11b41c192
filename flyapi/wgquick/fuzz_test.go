package wgquick

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(goldenFlyConf))
	f.Add([]byte("[Interface]\nPrivateKey = " + testPrivB64 + "\nAddress = fdaa:0:18:a7b:d6b:0:a:2\nMTU = 1420\n[Peer]\nPublicKey = " + testGWKey + "\nAllowedIPs = fdaa:0:18::/48, 10.0.0.0/8\nEndpoint = [2001:db8::1]:51820\n"))
	f.Add([]byte("[interface]\r\nprivatekey=" + testPrivB64 + "#c\r\naddress=fdaa::2/64\r\n[peer]\r\npublickey=" + testGWKey + "\r\nallowedips=fdaa::/16\r\nendpoint=localhost:1\r\npersistentkeepalive=off\r\n"))
	f.Add([]byte("[Peer]\n[Peer]\n"))
	f.Add([]byte("Key = x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *ConfigError: %v", err, err)
			}
			if ce.Line < 0 || ce.Line > strings.Count(string(data), "\n")+1 {
				t.Fatalf("line %d out of range", ce.Line)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("parsed config does not validate: %v", err)
		}
		rendered := cfg.Render()
		again, err := Parse(rendered)
		if err != nil {
			t.Fatalf("render of a parsed config does not parse: %v\n%s", err, rendered)
		}
		if !reflect.DeepEqual(again, cfg) {
			t.Fatalf("round trip changed the config:\n%#v\n%#v", cfg, again)
		}
		if string(again.Render()) != string(rendered) {
			t.Fatal("render is not deterministic")
		}
		if s := fmt_(cfg); cfg.PrivateKey != cfg.PeerPublicKey && strings.Contains(s, cfg.PrivateKey.String()) {
			t.Fatalf("formatting shows the private key: %s", s)
		}
	})
}

func fmt_(c *Config) string { return c.String() + c.GoString() }

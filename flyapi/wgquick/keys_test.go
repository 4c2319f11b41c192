package wgquick

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
)

// RFC 7748 §6.1 test vector (Alice).
const (
	rfcPrivHex = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
	rfcPubHex  = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
)

func keyFromHex(t *testing.T, s string) Key {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad hex key %q", s)
	}
	var k Key
	copy(k[:], b)
	return k
}

func TestParseKey(t *testing.T) {
	valid := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"valid", valid, ""},
		{"valid with whitespace", "  " + valid + "\n", ""},
		{"empty", "", "empty"},
		{"31 bytes", base64.StdEncoding.EncodeToString(make([]byte, 31)), "decodes to 31 bytes"},
		{"33 bytes", base64.StdEncoding.EncodeToString(make([]byte, 33)), "decodes to 33 bytes"},
		{"no padding", strings.TrimRight(valid, "="), "missing '=' padding"},
		{"url-safe", base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)), "URL-safe"},
		{"garbage", "not a key at all!!!!!!!!!!!!!!!!!!!!!!!!!!!", "not valid standard base64"},
		{"hex", strings.Repeat("ab", 32), "decodes to 48 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKey(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseKey: %v", err)
				}
				if k.String() != strings.TrimSpace(tt.in) {
					t.Fatalf("String() = %q, want %q", k.String(), strings.TrimSpace(tt.in))
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseKey(%q) succeeded, want error %q", tt.in, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
			if len(tt.in) > 8 && strings.Contains(err.Error(), strings.TrimSpace(tt.in)) {
				t.Fatalf("error repeats the key: %q", err)
			}
		})
	}
}

func TestKeyEncodingsAndPublicKey(t *testing.T) {
	priv := keyFromHex(t, rfcPrivHex)
	if got := priv.PublicKey().Hex(); got != rfcPubHex {
		t.Fatalf("PublicKey = %s, want %s (RFC 7748)", got, rfcPubHex)
	}
	if priv.Hex() != rfcPrivHex {
		t.Fatalf("Hex = %s", priv.Hex())
	}
	back, err := ParseKey(priv.String())
	if err != nil || back != priv {
		t.Fatalf("base64 round trip: %v %v", back, err)
	}
	if len(priv.String()) != 44 {
		t.Fatalf("String length %d, want 44", len(priv.String()))
	}
	if priv.IsZero() || !(Key{}).IsZero() {
		t.Fatal("IsZero wrong")
	}
	var viaText Key
	if err := viaText.UnmarshalText([]byte(priv.String())); err != nil || viaText != priv {
		t.Fatalf("UnmarshalText: %v", err)
	}
	if err := viaText.UnmarshalText([]byte("short")); err == nil {
		t.Fatal("UnmarshalText accepted a bad key")
	}
}

func TestGenerateKeyPair(t *testing.T) {
	a, err := GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	if a.Private == b.Private || a.Public == b.Public {
		t.Fatal("two generated key pairs are equal")
	}
	for _, kp := range []KeyPair{a, b} {
		if kp.Public != kp.Private.PublicKey() {
			t.Fatal("Public is not X25519(Private, basepoint)")
		}
		if kp.Private[0]&7 != 0 || kp.Private[31]&128 != 0 || kp.Private[31]&64 == 0 {
			t.Fatal("private key not clamped")
		}
		if _, err := ParseKey(kp.Public.String()); err != nil {
			t.Fatalf("public key does not parse: %v", err)
		}
	}
	if _, err := generateKeyPair(bytes.NewReader(make([]byte, 5))); err == nil {
		t.Fatal("short random source accepted")
	}
}

// secretForms are the ways a private key could show up in output.
func secretForms(k Key) []string {
	dec := fmt.Sprint([32]byte(k))
	return []string{k.String(), k.Hex(), strings.ToUpper(k.Hex()), dec[1 : len(dec)-1], fmt.Sprintf("%#v", [32]byte(k))[10:40]}
}

func assertNoSecret(t *testing.T, what, out string, k Key) {
	t.Helper()
	for _, s := range secretForms(k) {
		if strings.Contains(out, s) {
			t.Fatalf("%s shows the private key: %q", what, out)
		}
	}
}

func TestKeyPairRedaction(t *testing.T) {
	kp, err := GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	// Self-check: the raw key itself is detected.
	for _, s := range []string{fmt.Sprint(kp.Private), fmt.Sprintf("%x", [32]byte(kp.Private)), fmt.Sprintf("%v", [32]byte(kp.Private))} {
		found := false
		for _, f := range secretForms(kp.Private) {
			found = found || strings.Contains(s, f)
		}
		if !found {
			t.Fatalf("secretForms misses %q", s)
		}
	}
	cfg := &Config{PrivateKey: kp.Private, PeerPublicKey: kp.Public}
	type wrapper struct {
		KP  KeyPair
		PKP *KeyPair
		Cfg *Config
	}
	values := map[string]any{"KeyPair": kp, "*KeyPair": &kp, "wrapper": wrapper{kp, &kp, cfg}, "[]KeyPair": []KeyPair{kp}, "*Config": cfg, "Config": *cfg}
	for vname, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3v"} {
			out := fmt.Sprintf(verb, v)
			assertNoSecret(t, vname+" "+verb, out, kp.Private)
		}
	}
	if !strings.Contains(fmt.Sprint(kp), kp.Public.String()) {
		t.Fatal("String should show the public key")
	}
	j, err := json.Marshal(kp)
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecret(t, "json", string(j), kp.Private)

	var logged strings.Builder
	log := funcr.New(func(prefix, args string) { logged.WriteString(args) }, funcr.Options{})
	log.Info("key pair", "kp", kp, "cfg", cfg)
	assertNoSecret(t, "logr", logged.String(), kp.Private)
	if !strings.Contains(logged.String(), kp.Public.String()) {
		t.Fatalf("log should show the public key: %s", logged.String())
	}
}

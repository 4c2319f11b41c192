package wgquick

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// KeyLen is the size of a Curve25519 key in bytes.
const KeyLen = 32

// Key is a Curve25519 (X25519) key, public or private. Its text form is
// standard base64 (44 characters with '=' padding), as in wg-quick files and
// the Fly API; Hex gives the form wireguard-go's UAPI expects.
//
// Key.String prints the key. Never format a private Key directly: keep
// private keys in a KeyPair or a Config, whose String, GoString and
// Format methods redact them.
type Key [KeyLen]byte

// ParseKey decodes a standard base64 key that must decode to exactly 32
// bytes. Surrounding whitespace is ignored. The error never repeats the input
// (it may be a private key).
func ParseKey(s string) (Key, error) {
	var k Key
	s = strings.TrimSpace(s)
	if s == "" {
		return k, fmt.Errorf("key is empty: expected standard base64 of %d bytes (44 characters ending in '=')", KeyLen)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		hint := ""
		if strings.ContainsAny(s, "-_") {
			hint = " (it looks like URL-safe base64; use standard base64 with '+' and '/')"
		} else if len(s)%4 != 0 {
			hint = " (missing '=' padding?)"
		}
		// Do not wrap err: base64.CorruptInputError only holds an offset,
		// but keep the message free of the key's bytes by construction.
		return k, fmt.Errorf("key is not valid standard base64 (%d characters)%s: expected %d bytes encoded as 44 characters ending in '='", len(s), hint, KeyLen)
	}
	if len(b) != KeyLen {
		return k, fmt.Errorf("key decodes to %d bytes, want %d: a WireGuard key is 44 base64 characters ending in '='", len(b), KeyLen)
	}
	copy(k[:], b)
	return k, nil
}

// String returns the key in standard base64.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex returns the key in lower-case hex, for wireguard-go UAPI
// (private_key=, public_key=).
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

// IsZero reports whether every byte of the key is zero (an unset key).
func (k Key) IsZero() bool { return k == Key{} }

// PublicKey treats k as a private key and returns X25519(k, basepoint).
// X25519 clamps the scalar itself, so unclamped private keys work too.
func (k Key) PublicKey() Key {
	priv, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil {
		// Unreachable: NewPrivateKey only fails on a wrong length.
		panic("wgquick: X25519 private key: " + err.Error())
	}
	var pub Key
	copy(pub[:], priv.PublicKey().Bytes())
	return pub
}

// MarshalText encodes the key in standard base64.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes a standard base64 key (see ParseKey).
func (k *Key) UnmarshalText(b []byte) error {
	p, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// KeyPair is a WireGuard key pair. Formatting it with fmt (any verb), logr or
// JSON never shows the private key.
type KeyPair struct {
	Private Key
	Public  Key
}

// GenerateKeyPair makes a new key pair from crypto/rand. The private key is
// clamped like `wg genkey` does.
func GenerateKeyPair() (KeyPair, error) {
	return generateKeyPair(rand.Reader)
}

func generateKeyPair(r io.Reader) (KeyPair, error) {
	var kp KeyPair
	if _, err := io.ReadFull(r, kp.Private[:]); err != nil {
		return KeyPair{}, fmt.Errorf("generate wireguard key: read random bytes: %w", err)
	}
	kp.Private[0] &= 248
	kp.Private[31] &= 127
	kp.Private[31] |= 64
	kp.Public = kp.Private.PublicKey()
	if kp.Public.IsZero() || kp.Private.IsZero() {
		return KeyPair{}, fmt.Errorf("generate wireguard key: produced an all-zero key; the random source is broken")
	}
	return kp, nil
}

const redacted = "<redacted>"

// String shows the public key only.
func (kp KeyPair) String() string {
	return "{Private:" + redacted + " Public:" + kp.Public.String() + "}"
}

// GoString shows the public key only.
func (kp KeyPair) GoString() string {
	return `wgquick.KeyPair{Private:"` + redacted + `", Public:"` + kp.Public.String() + `"}`
}

// Format implements fmt.Formatter so that every verb (%v, %+v, %#v, %s, %x,
// %q, ...) goes through the redacted forms.
func (kp KeyPair) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, kp.GoString())
		return
	}
	_, _ = io.WriteString(f, kp.String())
}

// MarshalLog implements logr.Marshaler: log the public key only.
func (kp KeyPair) MarshalLog() any {
	return map[string]string{"private": redacted, "public": kp.Public.String()}
}

// MarshalJSON never encodes the private key: store it explicitly
// (kp.Private.String()) where it belongs, in a Secret.
func (kp KeyPair) MarshalJSON() ([]byte, error) {
	return []byte(`{"private":"` + redacted + `","public":"` + kp.Public.String() + `"}`), nil
}

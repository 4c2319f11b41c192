// Package wgquick is the wg-quick file `fly wireguard create` writes and the
// WireGuard keys in it: Parse (strict, every error a *ConfigError naming the
// line, the field and the fix), Config.Render (byte for byte flyctl's
// output), Config.Validate, and Key / KeyPair with X25519 key generation.
//
// It lives under flyapi because the file is Fly's format, and it is a leaf
// (standard library only) because both sides use it without the other: the
// Fly API client builds the file from an addWireGuardPeer response
// (flyapi.NewWireGuardConfig), and the sidecar reads it from the pod's
// Secret. The sidecar must not pull in the API client, so the format cannot
// live in package flyapi itself.
//
// Decisions where the Fly contract leaves room: ListenPort is validated then
// ignored; DNS defaults to <prefix48>::3; Address must be IPv6;
// PostUp/Table/PresharedKey and the other wg-quick keys without meaning for a
// userspace tunnel are rejected (see Parse).
//
// # Secrets
//
// KeyPair and Config implement fmt.Formatter and logr.Marshaler so that
// printing them with any verb never shows a private key. Key itself prints
// its base64 value: do not format a bare private Key.
package wgquick

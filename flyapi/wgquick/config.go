package wgquick

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/glaceon/glaceon/flyapi/target"
)

// DefaultGatewayPort is the UDP port of Fly's WireGuard gateways. The API does
// not return it; flyctl hard-codes it.
const DefaultGatewayPort = 51820

// DefaultKeepalive is the PersistentKeepalive (seconds) flyctl writes.
const DefaultKeepalive = 15

// PeerPrefixBits is the prefix length Fly uses for a peer's Address.
const PeerPrefixBits = 120

// MaxSize bounds the size of a wg-quick file Parse accepts.
const MaxSize = 64 << 10

// Config is the content of the wg-quick file `fly wireguard create`
// writes. Its String, GoString and Format methods redact PrivateKey.
type Config struct {
	PrivateKey          Key
	Address             netip.Addr     // the peer IP (file: Address = <peerip>/120)
	DNS                 netip.Addr     // <prefix48>::3
	PeerPublicKey       Key            // gateway public key
	AllowedIPs          []netip.Prefix // <prefix48>::/48
	Endpoint            string         // host:port; host is usually a DNS name
	PersistentKeepalive int            // seconds, 0 = off
	MTU                 int            // 0 when the file has no MTU line
}

// Prefix48 returns the first 48 bits of ip (the 6PN network of a Fly
// address). It returns the zero Prefix for an invalid or IPv4 address.
func Prefix48(ip netip.Addr) netip.Prefix {
	if !ip.Is6() || ip.Is4In6() {
		return netip.Prefix{}
	}
	p, err := ip.WithZone("").Prefix(48)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// DNSServerFor returns <prefix48>::3, the Fly DNS server a WireGuard peer
// uses. It returns the zero Addr for an invalid or IPv4 address.
func DNSServerFor(peerIP netip.Addr) netip.Addr {
	p := Prefix48(peerIP)
	if !p.IsValid() {
		return netip.Addr{}
	}
	b := p.Addr().As16()
	b[15] = 3
	return netip.AddrFrom16(b)
}

// Render returns the wg-quick text, byte for byte what `fly wireguard create`
// writes for the same values (a leading empty line, "Key = value" lines, an
// empty line between sections and a trailing empty line). An MTU line is
// written after DNS only when MTU is non-zero, and PersistentKeepalive only
// when non-zero. The output is deterministic.
func (c *Config) Render() []byte {
	var b bytes.Buffer
	b.WriteString("\n[Interface]\n")
	fmt.Fprintf(&b, "PrivateKey = %s\n", c.PrivateKey.String())
	fmt.Fprintf(&b, "Address = %s/%d\n", addrString(c.Address), PeerPrefixBits)
	fmt.Fprintf(&b, "DNS = %s\n", addrString(c.DNS))
	if c.MTU != 0 {
		fmt.Fprintf(&b, "MTU = %d\n", c.MTU)
	}
	b.WriteString("\n[Peer]\n")
	fmt.Fprintf(&b, "PublicKey = %s\n", c.PeerPublicKey.String())
	allowed := make([]string, len(c.AllowedIPs))
	for i, p := range c.AllowedIPs {
		allowed[i] = p.String()
	}
	fmt.Fprintf(&b, "AllowedIPs = %s\n", strings.Join(allowed, ", "))
	fmt.Fprintf(&b, "Endpoint = %s\n", c.Endpoint)
	if c.PersistentKeepalive != 0 {
		fmt.Fprintf(&b, "PersistentKeepalive = %d\n", c.PersistentKeepalive)
	}
	b.WriteString("\n")
	return b.Bytes()
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// String describes the config with the private key redacted.
func (c Config) String() string {
	allowed := make([]string, len(c.AllowedIPs))
	for i, p := range c.AllowedIPs {
		allowed[i] = p.String()
	}
	return fmt.Sprintf("{PrivateKey:%s Address:%s DNS:%s PeerPublicKey:%s AllowedIPs:[%s] Endpoint:%s PersistentKeepalive:%d MTU:%d}",
		redacted, addrString(c.Address), addrString(c.DNS), c.PeerPublicKey.String(), strings.Join(allowed, " "),
		c.Endpoint, c.PersistentKeepalive, c.MTU)
}

// GoString is like String, with the private key redacted.
func (c Config) GoString() string {
	return "wgquick.Config" + c.String()
}

// Format implements fmt.Formatter: every verb prints the redacted form.
func (c Config) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, c.GoString())
		return
	}
	_, _ = io.WriteString(f, c.String())
}

// MarshalLog implements logr.Marshaler with the private key redacted.
func (c Config) MarshalLog() any { return c.String() }

// ConfigError is a problem in a wg-quick file (Line > 0) or in a
// Config value (Line == 0). Msg says what is wrong and how to fix it.
type ConfigError struct {
	Line  int
	Field string
	Msg   string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString("wg config")
	if e.Line > 0 {
		fmt.Fprintf(&b, " line %d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Validate checks that the config is complete and usable by the sidecar.
// Errors are *ConfigError with Line 0.
func (c *Config) Validate() error {
	bad := func(field, msg string) error { return &ConfigError{Field: field, Msg: msg} }
	if c.PrivateKey.IsZero() {
		return bad("PrivateKey", "missing or all zero: fix: set the private key the peer was created with (base64, 44 characters)")
	}
	if !c.Address.IsValid() {
		return bad("Address", "missing: fix: set Address = <peer ip>/120 as returned by the Fly API")
	}
	if c.Address.Zone() != "" {
		return bad("Address", "has an IPv6 zone: fix: remove the %zone suffix")
	}
	if !c.Address.Is6() || c.Address.Is4In6() {
		return bad("Address", "not an IPv6 address: fix: Fly peer IPs are IPv6 6PN addresses, use the peerip returned by the Fly API")
	}
	if !c.DNS.IsValid() {
		return bad("DNS", "missing: fix: set DNS = <first 48 bits of the peer ip>::3")
	}
	if c.DNS.Zone() != "" {
		return bad("DNS", "has an IPv6 zone: fix: remove the %zone suffix")
	}
	if c.PeerPublicKey.IsZero() {
		return bad("PublicKey", "missing or all zero: fix: set the gateway public key returned by the Fly API")
	}
	if len(c.AllowedIPs) == 0 {
		return bad("AllowedIPs", "empty: fix: set AllowedIPs = <first 48 bits of the peer ip>::/48")
	}
	for _, p := range c.AllowedIPs {
		if !p.IsValid() {
			return bad("AllowedIPs", "contains an invalid prefix: fix: use CIDR notation like fdaa:0:18::/48")
		}
		if p.Addr().Zone() != "" {
			return bad("AllowedIPs", "contains an IPv6 zone: fix: remove the %zone suffix")
		}
	}
	if err := validateEndpoint(c.Endpoint); err != nil {
		return bad("Endpoint", err.Error())
	}
	if c.PersistentKeepalive < 0 || c.PersistentKeepalive > 65535 {
		return bad("PersistentKeepalive", fmt.Sprintf("%d out of range: fix: use 0..65535 seconds (Fly uses %d)", c.PersistentKeepalive, DefaultKeepalive))
	}
	if c.MTU != 0 && (c.MTU < 1280 || c.MTU > 65535) {
		return bad("MTU", fmt.Sprintf("%d out of range: fix: use 1280..65535 (IPv6 needs at least 1280; wg-quick defaults to 1420) or remove the line", c.MTU))
	}
	return nil
}

// validateEndpoint checks host:port with a numeric port in 1..65535 and a
// host that is a DNS name or an IP literal (IPv6 in brackets).
func validateEndpoint(ep string) error {
	if ep == "" {
		return fmt.Errorf("missing: fix: set Endpoint = <gateway host>:%d", DefaultGatewayPort)
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("%q is not host:port: fix: use <gateway host>:%d (IPv6 literals in brackets, e.g. [fdaa::1]:%d)", ep, DefaultGatewayPort, DefaultGatewayPort)
	}
	if err := ValidateEndpointHost(host); err != nil {
		return fmt.Errorf("host: %v", err)
	}
	n, err := target.ParsePort(port)
	if err != nil || port != strconv.Itoa(int(n)) {
		return fmt.Errorf("port %q out of range: fix: use a number in 1..65535 (Fly gateways listen on %d)", port, DefaultGatewayPort)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() && !strings.HasPrefix(ep, "[") {
		return fmt.Errorf("IPv6 address must be in brackets: fix: use [%s]:%s", host, port)
	}
	return nil
}

// ValidateEndpointHost accepts an IP literal (v4 or v6, no zone) or a DNS
// host name (labels of letters, digits, '-' and '_', at most 253 bytes).
func ValidateEndpointHost(host string) error {
	if host == "" {
		return fmt.Errorf("empty: fix: use the gateway host name returned by the Fly API (endpointip)")
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return fmt.Errorf("%q has an IPv6 zone: fix: remove the %%zone suffix", host)
		}
		return nil
	}
	if target.CheckHostName(host) != nil {
		return fmt.Errorf("%q is neither an IP address nor a valid host name: fix: use a host name like ord1.gateway.6pn.dev or an IP address", target.Shorten(host))
	}
	return nil
}

// unsupportedKeys are valid wg-quick / wg keys that glaceon rejects, with the
// reason shown to the user.
var unsupportedKeys = map[string]string{
	"presharedkey": "glaceon does not support preshared keys (Fly does not use them)",
	"fwmark":       "a userspace tunnel has no firewall mark",
	"table":        "a userspace tunnel installs no routes",
	"preup":        "glaceon runs no hook commands",
	"postup":       "glaceon runs no hook commands",
	"predown":      "glaceon runs no hook commands",
	"postdown":     "glaceon runs no hook commands",
	"saveconfig":   "glaceon never writes the file back",
}

// canonical key names, by lower-case name, per section.
var interfaceKeys = map[string]string{
	"privatekey": "PrivateKey",
	"address":    "Address",
	"dns":        "DNS",
	"mtu":        "MTU",
	"listenport": "ListenPort",
}

var peerKeys = map[string]string{
	"publickey":           "PublicKey",
	"allowedips":          "AllowedIPs",
	"endpoint":            "Endpoint",
	"persistentkeepalive": "PersistentKeepalive",
}

// Parse parses a wg-quick file of the shape `fly wireguard create` writes. It is strict, and every error is a *ConfigError naming the
// line, the field and the fix:
//
//   - exactly one [Interface] and one [Peer] section, in any order; section
//     names and keys are case-insensitive (like wg), "Key = Value" with
//     optional spaces; '#' starts a comment; blank lines are ignored; CRLF
//     line endings and a UTF-8 BOM are accepted;
//   - [Interface]: PrivateKey and Address are required; Address is one IP
//     with an optional prefix length (Fly writes peerip/120; only the IP is
//     kept); DNS is one IP and defaults to <prefix48 of Address>::3 when
//     absent; MTU is optional (1280..65535); ListenPort is validated
//     (0..65535) and then ignored, because the userspace tunnel always uses
//     an ephemeral local port and a client peer does not need a fixed one;
//   - [Peer]: PublicKey, AllowedIPs and Endpoint are required;
//     PersistentKeepalive is optional ("off" or 0..65535, 0 when absent);
//     AllowedIPs is a comma-separated list (spaces allowed) and may be
//     repeated, which appends, as wg does; each prefix is masked;
//   - any other key, a repeated key (except AllowedIPs), a key outside a
//     section, more than one Address/DNS value, or a file over 64 KiB is an
//     error. Hook and routing keys (PostUp, Table, ...) and PresharedKey are
//     rejected because they have no meaning for the userspace tunnel.
//
// Error messages never contain key material.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, &ConfigError{Msg: fmt.Sprintf("file is %d bytes, larger than the %d byte limit: fix: pass the wg-quick file written by `glaceon peer create` or `fly wireguard create`", len(data), MaxSize)}
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))

	const (
		secNone = iota
		secInterface
		secPeer
	)
	var (
		c             Config
		section       = secNone
		interfaceLine int
		peerLine      int
		seen          = map[string]int{} // canonical key -> line
		dnsSet        bool
	)
	lines := strings.Split(string(data), "\n")
	for i, raw := range lines {
		lineNo := i + 1
		line := raw
		if j := strings.IndexByte(line, '#'); j >= 0 {
			line = line[:j]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		errf := func(field, format string, args ...any) error {
			return &ConfigError{Line: lineNo, Field: field, Msg: fmt.Sprintf(format, args...)}
		}
		if strings.HasPrefix(line, "[") {
			name := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(line, "["), "]"))
			if !strings.HasSuffix(line, "]") {
				return nil, errf("section", "missing ']': fix: write [Interface] or [Peer]")
			}
			switch strings.ToLower(name) {
			case "interface":
				if interfaceLine != 0 {
					return nil, errf("[Interface]", "second [Interface] section (first on line %d): fix: keep exactly one", interfaceLine)
				}
				interfaceLine, section = lineNo, secInterface
			case "peer":
				if peerLine != 0 {
					return nil, errf("[Peer]", "second [Peer] section (first on line %d): fix: keep exactly one peer, the Fly gateway", peerLine)
				}
				peerLine, section = lineNo, secPeer
			default:
				return nil, errf("section", "unknown section [%s]: fix: use [Interface] or [Peer]", target.Shorten(name))
			}
			continue
		}
		eq := strings.IndexByte(line, '=')
		if eq < 0 {
			return nil, errf("line", "not a \"Key = Value\" line: fix: add '=' or comment it out with '#'")
		}
		rawKey := strings.TrimSpace(line[:eq])
		value := strings.TrimSpace(line[eq+1:])
		lk := strings.ToLower(rawKey)
		if why, ok := unsupportedKeys[lk]; ok {
			return nil, errf(rawKey, "not supported: %s: fix: remove the line", why)
		}
		var key string
		var ok bool
		switch section {
		case secNone:
			return nil, errf(target.Shorten(rawKey), "key outside a section: fix: put it under [Interface] or [Peer]")
		case secInterface:
			key, ok = interfaceKeys[lk]
			if !ok {
				if pk, inPeer := peerKeys[lk]; inPeer {
					return nil, errf(pk, "belongs in [Peer], found in [Interface]: fix: move the line under [Peer]")
				}
				return nil, errf(target.Shorten(rawKey), "unknown key in [Interface]: fix: allowed keys are PrivateKey, Address, DNS, MTU (and ListenPort, ignored)")
			}
		case secPeer:
			key, ok = peerKeys[lk]
			if !ok {
				if ik, inIface := interfaceKeys[lk]; inIface {
					return nil, errf(ik, "belongs in [Interface], found in [Peer]: fix: move the line under [Interface]")
				}
				return nil, errf(target.Shorten(rawKey), "unknown key in [Peer]: fix: allowed keys are PublicKey, AllowedIPs, Endpoint, PersistentKeepalive")
			}
		}
		if prev, dup := seen[key]; dup && key != "AllowedIPs" {
			return nil, errf(key, "duplicate key (first on line %d): fix: keep one %s line", prev, key)
		}
		seen[key] = lineNo

		if err := c.setKey(key, value, errf); err != nil {
			return nil, err
		}
		if key == "DNS" {
			dnsSet = true
		}
	}

	if err := c.complete(seen, interfaceLine, peerLine, dnsSet); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// setKey sets the field of the canonical key from value; errf makes the
// error for the current line.
func (c *Config) setKey(key, value string, errf func(field, format string, args ...any) error) error {
	switch key {
	case "PrivateKey":
		k, err := ParseKey(value)
		if err != nil {
			return errf(key, "%v: fix: use the private key generated for this peer", err)
		}
		if k.IsZero() {
			return errf(key, "all-zero key: fix: use the private key generated for this peer")
		}
		c.PrivateKey = k
	case "PublicKey":
		k, err := ParseKey(value)
		if err != nil {
			return errf(key, "%v: fix: use the gateway public key (pubkey) returned by the Fly API", err)
		}
		if k.IsZero() {
			return errf(key, "all-zero key: fix: use the gateway public key returned by the Fly API")
		}
		c.PeerPublicKey = k
	case "Address":
		if strings.Contains(value, ",") {
			return errf(key, "more than one address: fix: glaceon uses exactly one, the peer IP (Address = <peerip>/120)")
		}
		a, err := parseAddrOrPrefix(value)
		if err != nil {
			return errf(key, "%q is not an IP address or IP/prefix: fix: use <peerip>/120 as returned by the Fly API", target.Shorten(value))
		}
		if !a.Is6() || a.Is4In6() {
			return errf(key, "%q is not an IPv6 address: fix: Fly peer IPs are IPv6 6PN addresses, use <peerip>/120 as returned by the Fly API", target.Shorten(value))
		}
		c.Address = a
	case "DNS":
		if strings.Contains(value, ",") {
			return errf(key, "more than one DNS value: fix: use exactly one, <first 48 bits of the peer ip>::3")
		}
		a, err := netip.ParseAddr(value)
		if err != nil || a.Zone() != "" {
			return errf(key, "%q is not an IP address: fix: use <first 48 bits of the peer ip>::3 (search domains are not supported)", target.Shorten(value))
		}
		c.DNS = a
	case "MTU":
		n, ok := target.ParseUint16(value)
		if !ok || n < 1280 {
			return errf(key, "%q out of range: fix: use 1280..65535 (wg-quick's default is 1420) or remove the line", target.Shorten(value))
		}
		c.MTU = int(n)
	case "ListenPort":
		if _, ok := target.ParseUint16(value); !ok {
			return errf(key, "%q out of range: fix: use 0..65535 or remove the line (glaceon ignores it)", target.Shorten(value))
		}
	case "AllowedIPs":
		for _, part := range strings.Split(value, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				return errf(key, "empty entry in the list: fix: remove the extra comma (example: fdaa:0:18::/48)")
			}
			p, err := netip.ParsePrefix(part)
			if err != nil {
				return errf(key, "%q is not an IP/prefix: fix: use CIDR notation like fdaa:0:18::/48", target.Shorten(part))
			}
			c.AllowedIPs = append(c.AllowedIPs, p.Masked())
		}
	case "Endpoint":
		if err := validateEndpoint(value); err != nil {
			return errf(key, "%v", err)
		}
		c.Endpoint = value
	case "PersistentKeepalive":
		if strings.EqualFold(value, "off") {
			c.PersistentKeepalive = 0
			break
		}
		n, ok := target.ParseUint16(value)
		if !ok {
			return errf(key, "%q out of range: fix: use 0..65535 seconds or \"off\" (Fly uses %d)", target.Shorten(value), DefaultKeepalive)
		}
		c.PersistentKeepalive = int(n)
	}
	return nil
}

// complete checks, after the last line, that every required key was given,
// and derives DNS when the file has none.
func (c *Config) complete(seen map[string]int, interfaceLine, peerLine int, dnsSet bool) error {
	missing := func(line int, field, msg string) error {
		return &ConfigError{Line: line, Field: field, Msg: msg}
	}
	if interfaceLine == 0 {
		return missing(0, "[Interface]", "section missing: fix: start the file with [Interface] (PrivateKey, Address, DNS)")
	}
	if peerLine == 0 {
		return missing(0, "[Peer]", "section missing: fix: add a [Peer] section (PublicKey, AllowedIPs, Endpoint)")
	}
	if _, ok := seen["PrivateKey"]; !ok {
		return missing(interfaceLine, "PrivateKey", "missing in [Interface]: fix: add PrivateKey = <base64 private key>")
	}
	if _, ok := seen["Address"]; !ok {
		return missing(interfaceLine, "Address", "missing in [Interface]: fix: add Address = <peerip>/120")
	}
	if _, ok := seen["PublicKey"]; !ok {
		return missing(peerLine, "PublicKey", "missing in [Peer]: fix: add PublicKey = <gateway public key>")
	}
	if _, ok := seen["AllowedIPs"]; !ok {
		return missing(peerLine, "AllowedIPs", "missing in [Peer]: fix: add AllowedIPs = <first 48 bits of the peer ip>::/48")
	}
	if _, ok := seen["Endpoint"]; !ok {
		return missing(peerLine, "Endpoint", fmt.Sprintf("missing in [Peer]: fix: add Endpoint = <gateway host>:%d", DefaultGatewayPort))
	}
	if !dnsSet {
		c.DNS = DNSServerFor(c.Address)
		if !c.DNS.IsValid() {
			return missing(interfaceLine, "DNS", "missing in [Interface] and cannot be derived from an IPv4 Address: fix: add DNS = <ip>")
		}
	}
	return nil
}

func parseAddrOrPrefix(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, err
		}
		return p.Addr(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("zone not allowed")
	}
	return a, nil
}

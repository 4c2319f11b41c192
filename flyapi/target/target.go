// Package target is the one grammar of Fly targets: the Fly private hosts
// and ports a pod reaches (<app>.flycast, <app>.internal), as the
// glaceon.fly/target annotation and the MachineProxy spec write them, and
// the LISTEN=TARGET forwards of the sidecar's --forward flag. It parses and
// prints both, and holds the one port parser.
//
// It imports the standard library only, so that the sidecar, the webhook
// (which wraps Problems into a field.ErrorList) and the wg-quick parser share
// it without importing each other or Kubernetes; it lives in the flyapi tree,
// the bottom of glaceon's import graph, because the names are Fly's.
//
// The CRD's CEL rules (webhook/api/v1alpha1) repeat the annotation grammar
// as a first line of defence in the API server. testdata/targets.json is the
// table both are tested against: TestTable here, and the MachineProxy schema
// test through a real kube-apiserver, which also lists the few cases CEL
// cannot express and leaves to this parser.
package target

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxTargets bounds the targets of one list (one pod or one MachineProxy);
// each distinct host takes one loopback address from 127.0.0.2 on.
const MaxTargets = 16

// DefaultPort is the port of "app", "app.flycast" and "http://host".
const DefaultPort = 80

const (
	flycastSuffix  = ".flycast"
	internalSuffix = ".internal"
	maxHostLength  = 253
	// maxReportedEntries bounds the work and the size of the report for
	// absurd values; past it only the count is reported.
	maxReportedEntries = 4 * MaxTargets
	// maxShownValueLength truncates bad values quoted back in messages.
	maxShownValueLength = 80

	// Examples shows the grammar in messages.
	Examples = `e.g. "twi-ollama", "db.internal:5432" or "http://twi-ollama.flycast"`
)

// Target is one Fly destination.
type Target struct {
	// Host is the lower-case Fly private host name, ending in .flycast or
	// .internal (e.g. "twi-ollama.flycast", "iad.api.internal").
	Host string
	// Port is the TCP port on the Fly side.
	Port uint16
}

// String renders the target in its canonical "host:port" form, which Parse,
// ParseList and ParseHostPort map back to the same Target.
func (t Target) String() string {
	return t.Host + ":" + strconv.Itoa(int(t.Port))
}

// Format renders targets as a canonical comma-separated list.
func Format(targets []Target) string {
	parts := make([]string, len(targets))
	for i, t := range targets {
		parts[i] = t.String()
	}
	return strings.Join(parts, ",")
}

// Kind is the kind of a Problem, mirroring the Kubernetes field error types
// the webhook reports it as.
type Kind int

// The kinds of Problem.
const (
	Invalid   Kind = iota // an entry is not a target
	Required              // the list is empty
	Duplicate             // an entry repeats an earlier one
	TooMany               // more than MaxTargets entries
)

// Problem is one thing wrong with a target list.
type Problem struct {
	Kind Kind
	// Value is the offending entry (or the whole value for an empty entry),
	// shortened for messages; empty for Required and TooMany.
	Value string
	// Count is the number of entries, for TooMany.
	Count int
	// Detail says what is wrong and how to fix it.
	Detail string
}

func (p *Problem) Error() string {
	switch p.Kind {
	case Required:
		return p.Detail
	case TooMany:
		return fmt.Sprintf("%d entries: %s", p.Count, p.Detail)
	}
	return fmt.Sprintf("%q: %s", p.Value, p.Detail)
}

// ParseList parses a comma-separated list of
//
//   - "app"                   → app.flycast:80
//   - "host:port"             → host must end in .flycast or .internal
//   - "http://host[:port][/]" → port 80 unless given
//
// Host names are case-insensitive and returned in lower case. Every problem
// is reported, each naming the offending entry and the fix. The targets that
// did parse are returned along with the problems (at most MaxTargets), so
// callers can check them for conflicts too.
func ParseList(value string) ([]Target, []*Problem) {
	if strings.TrimSpace(value) == "" {
		return nil, []*Problem{{Kind: Required, Detail: "list one or more Fly targets, " + Examples}}
	}
	entries := strings.Split(value, ",")
	if len(entries) > maxReportedEntries {
		return nil, []*Problem{tooMany(len(entries))}
	}
	var problems []*Problem
	if len(entries) > MaxTargets {
		problems = append(problems, tooMany(len(entries)))
	}
	targets := make([]Target, 0, len(entries))
	firstIndex := make(map[Target]int, len(entries))
	for i, raw := range entries {
		entry := strings.TrimSpace(raw)
		if entry == "" {
			problems = append(problems, &Problem{Kind: Invalid, Value: Shorten(value),
				Detail: fmt.Sprintf("entry %d is empty; remove the extra comma", i+1)})
			continue
		}
		t, err := Parse(entry)
		if err != nil {
			problems = append(problems, &Problem{Kind: Invalid, Value: Shorten(entry), Detail: err.Error()})
			continue
		}
		if first, seen := firstIndex[t]; seen {
			problems = append(problems, &Problem{Kind: Duplicate, Value: Shorten(entry),
				Detail: fmt.Sprintf("entry %d is %s again (entry %d already is); list each target once", i+1, t, first+1)})
			continue
		}
		firstIndex[t] = i
		targets = append(targets, t)
	}
	if len(targets) > MaxTargets {
		targets = targets[:MaxTargets] // more would not fit the loopback plan
	}
	return targets, problems
}

func tooMany(count int) *Problem {
	return &Problem{Kind: TooMany, Count: count,
		Detail: fmt.Sprintf("at most %d targets per pod; drop some, or serve them to many pods through a MachineProxy", MaxTargets)}
}

// Parse parses one trimmed, non-empty entry of a list (see ParseList). The
// error says what is wrong and how to fix it, without repeating the entry.
func Parse(entry string) (Target, error) {
	for _, r := range entry {
		if r <= ' ' || r >= 0x7f {
			return Target{}, fmt.Errorf(`unexpected character %+q; a target is "app", "host:port" or "http://host[:port]"`, r)
		}
	}
	switch {
	case hasPrefixFold(entry, "http://"):
		return parseHTTP(entry[len("http://"):])
	case hasPrefixFold(entry, "https://"):
		return Target{}, fmt.Errorf(`https:// is not supported: the sidecar forwards TCP and TLS passes through it, so write "host:443" to reach port 443, or "http://host" for plain HTTP`)
	case strings.Contains(entry, "://"):
		scheme, _, _ := strings.Cut(entry, "://")
		return Target{}, fmt.Errorf(`scheme %q is not supported; write "host:port" (e.g. db.internal:5432) or "http://host"`, Shorten(scheme))
	}
	if bad := strings.IndexAny(entry, "/?#@[]"); bad >= 0 {
		return Target{}, fmt.Errorf(`unexpected %q; a target is "app", "host:port" or "http://host[:port]"`, entry[bad:bad+1])
	}
	if host, port, hasPort := strings.Cut(entry, ":"); hasPort {
		return hostPort(host, port)
	}
	if strings.HasSuffix(strings.ToLower(entry), flycastSuffix) {
		// "twi-ollama.flycast" reads like the URL users already type on
		// Fly; Flycast is HTTP, so port 80 as for "http://".
		return hostPort(entry, strconv.Itoa(DefaultPort))
	}
	if strings.Contains(entry, ".") {
		return Target{}, fmt.Errorf(`a host needs a port: write "%s:<port>", or "http://%s" for port 80`, Shorten(entry), Shorten(entry))
	}
	app := strings.ToLower(entry)
	if err := checkLabel(app, "app name"); err != nil {
		return Target{}, err
	}
	return Target{Host: app + flycastSuffix, Port: DefaultPort}, nil
}

// parseHTTP parses what follows "http://": host[:port][/].
func parseHTTP(rest string) (Target, error) {
	switch {
	case strings.Contains(rest, "@"):
		return Target{}, fmt.Errorf("user info (user:password@) is not allowed; credentials never belong in annotations")
	case strings.Contains(rest, "?"):
		return Target{}, fmt.Errorf(`a query string is not part of a target; write "http://host[:port]"`)
	case strings.Contains(rest, "#"):
		return Target{}, fmt.Errorf(`a fragment is not part of a target; write "http://host[:port]"`)
	}
	hp, path, _ := strings.Cut(rest, "/")
	if path != "" {
		return Target{}, fmt.Errorf(`a path is not part of a target (the app keeps using its own paths); write "http://host[:port]"`)
	}
	if host, port, hasPort := strings.Cut(hp, ":"); hasPort {
		return hostPort(host, port)
	}
	if hp != "" && !strings.Contains(hp, ".") {
		return Target{}, fmt.Errorf(`the URL needs the full host name; write "http://%s.flycast"`, Shorten(hp))
	}
	return hostPort(hp, strconv.Itoa(DefaultPort))
}

func hostPort(rawHost, rawPort string) (Target, error) {
	host := strings.ToLower(rawHost)
	if err := CheckHost(host); err != nil {
		return Target{}, err
	}
	port, err := ParsePort(rawPort)
	if err != nil {
		return Target{}, err
	}
	return Target{Host: host, Port: port}, nil
}

// ParseHostPort parses the canonical "host:port" form (Target.String), as
// the sidecar's --forward takes it: no shorthand, no scheme. The host is
// case-insensitive and may end in one dot (an absolute DNS name); it is
// returned in lower case without the dot.
func ParseHostPort(s string) (Target, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 || strings.ContainsAny(s, "[]") || strings.Contains(s[:i], ":") {
		return Target{}, fmt.Errorf("%q is not HOST:PORT: write it like myapp.flycast:80 or db.internal:5432", Shorten(s))
	}
	host := strings.TrimSuffix(s[:i], ".")
	if strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return Target{}, fmt.Errorf("%q is not HOST:PORT: the host has a space or a character outside ASCII", Shorten(s))
	}
	return hostPort(host, s[i+1:])
}

// CheckHost checks a lower-case host name against what Fly's private DNS
// serves: DNS labels ending in .flycast or .internal.
func CheckHost(host string) error {
	switch {
	case host == "":
		return fmt.Errorf(`the host is empty; write "<app>.flycast:<port>" or "<app>.internal:<port>"`)
	case strings.HasSuffix(host, "."):
		return fmt.Errorf("remove the trailing dot from the host name")
	case strings.TrimPrefix(host, ".") == flycastSuffix[1:]:
		return fmt.Errorf(`the host names no app; write "<app>.flycast"`)
	case strings.TrimPrefix(host, ".") == internalSuffix[1:]:
		return fmt.Errorf(`the host names no app; write "<app>.internal"`)
	case !strings.HasSuffix(host, flycastSuffix) && !strings.HasSuffix(host, internalSuffix):
		return fmt.Errorf("host %q is not a Fly private host: it must end in .flycast or .internal (e.g. twi-ollama.flycast)", Shorten(host))
	}
	return checkName(host)
}

// CheckHostName checks a DNS host name of any domain (e.g. a WireGuard
// gateway's), case-insensitively: RFC 1123 labels of at most 63 characters,
// at most 253 characters in all, one trailing dot allowed.
func CheckHostName(host string) error {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "" {
		return fmt.Errorf("the host name is empty")
	}
	return checkName(h)
}

func checkName(host string) error {
	if len(host) > maxHostLength {
		return fmt.Errorf("host name is %d characters long; at most %d are allowed", len(host), maxHostLength)
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" {
			return fmt.Errorf("host %q has an empty label (two dots in a row); remove the extra dot", Shorten(host))
		}
		if err := checkLabel(label, "host label"); err != nil {
			return err
		}
	}
	return nil
}

// checkLabel checks a lower-case RFC 1123 DNS label; what names the kind of
// label in the message.
func checkLabel(label, what string) error {
	ok := len(label) >= 1 && len(label) <= 63 && label[0] != '-' && label[len(label)-1] != '-'
	for i := 0; ok && i < len(label); i++ {
		c := label[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%s %q is not a DNS label: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit",
			what, Shorten(label))
	}
	return nil
}

// ParsePort parses a TCP or UDP port: decimal digits only (no sign, no
// spaces), 1 to 65535. It is the one port parser of glaceon.
func ParsePort(raw string) (uint16, error) {
	if raw == "" {
		return 0, fmt.Errorf(`the port is empty; write "host:<port>", e.g. db.internal:5432`)
	}
	n, ok := parseUint16(raw)
	if !ok || n < 1 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", Shorten(raw))
	}
	return n, nil
}

// ParseUint16 parses a decimal number from 0 to 65535 with the same rules as
// ParsePort (the wg-quick fields MTU, ListenPort and PersistentKeepalive).
func ParseUint16(raw string) (uint16, bool) { return parseUint16(raw) }

func parseUint16(raw string) (uint16, bool) {
	if raw == "" || len(raw) > 5 || strings.Trim(raw, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// Shorten keeps user input quoted back in messages readable.
func Shorten(s string) string {
	if len(s) <= maxShownValueLength {
		return s
	}
	cut := maxShownValueLength
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// hasPrefixFold is strings.HasPrefix ignoring ASCII case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// Forward is one LISTEN=TARGET mapping of the sidecar: a local TCP address
// and the target it forwards to.
type Forward struct {
	Listen netip.AddrPort // local address to listen on
	Host   string         // target host, as in Target
	Port   uint16         // target port
}

// Target is the Fly side of the forward.
func (f Forward) Target() Target { return Target{Host: f.Host, Port: f.Port} }

// String is the canonical LISTEN=TARGET form ParseForward maps back to f; the
// sidecar labels metrics and logs with it.
func (f Forward) String() string { return f.Listen.String() + "=" + f.Target().String() }

// ParseForward parses LISTEN=TARGET, e.g. 127.0.0.2:80=myapp.flycast:80;
// TARGET is the canonical host:port (see ParseHostPort).
func ParseForward(s string) (Forward, error) {
	listen, tgt, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok {
		return Forward{}, fmt.Errorf("%q is not LISTEN=TARGET: write it like 127.0.0.2:80=myapp.flycast:80", Shorten(s))
	}
	ap, err := ParseListenAddr(strings.TrimSpace(listen))
	if err != nil {
		return Forward{}, fmt.Errorf("listen address in %q: %w", Shorten(s), err)
	}
	t, err := ParseHostPort(strings.TrimSpace(tgt))
	if err != nil {
		return Forward{}, fmt.Errorf("target in %q: %w", Shorten(s), err)
	}
	return Forward{Listen: ap, Host: t.Host, Port: t.Port}, nil
}

// ParseListenAddr accepts IP:PORT with an IP literal (127.0.0.2:80,
// 0.0.0.0:8080, [::1]:80) and a port from 1 to 65535.
func ParseListenAddr(s string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(s, ':')
	host := ""
	if i >= 0 {
		host = s[:i]
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	} else if strings.ContainsAny(host, ":[]") {
		host = ""
	}
	if host == "" {
		return netip.AddrPort{}, fmt.Errorf("%q is not IP:PORT: write it like 127.0.0.2:80 or 0.0.0.0:8080", Shorten(s))
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%q: the host must be an IP literal such as 127.0.0.2 or 0.0.0.0, not a name", Shorten(s))
	}
	port, err := ParsePort(s[i+1:])
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %w", Shorten(s), err)
	}
	return netip.AddrPortFrom(ip.Unmap(), port), nil
}

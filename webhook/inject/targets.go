package inject

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Target is one Fly destination a pod reaches through the sidecar.
type Target struct {
	// Host is the lower-case Fly private host name, ending in .flycast or
	// .internal (e.g. "twi-ollama.flycast", "iad.api.internal").
	Host string
	// Port is the TCP port on the Fly side; the sidecar listens on the same
	// port on the host's loopback address.
	Port int32
}

// String renders the target in its canonical "host:port" form, which
// ParseTargets accepts and maps back to the same Target.
func (t Target) String() string {
	return net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
}

// FormatTargets renders targets as a canonical glaceon.fly/target value.
func FormatTargets(targets []Target) string {
	parts := make([]string, len(targets))
	for i, t := range targets {
		parts[i] = t.String()
	}
	return strings.Join(parts, ",")
}

const (
	defaultTargetPort = 80
	flycastSuffix     = ".flycast"
	internalSuffix    = ".internal"
	maxHostLength     = 253
	// maxReportedEntries bounds the work and the size of the denial message
	// for absurd values; past it only the count is reported.
	maxReportedEntries = 4 * MaxTargets
	// maxShownValueLength truncates bad values quoted back in messages.
	maxShownValueLength = 80

	targetExamples = `e.g. "twi-ollama", "db.internal:5432" or "http://twi-ollama.flycast"`
)

var (
	dnsLabelPattern   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	regionCodePattern = regexp.MustCompile(`^[a-z]{3}$`)
)

// ParseTargets parses a glaceon.fly/target value (design.md §2): a
// comma-separated list of
//
//   - "app"                  → app.flycast:80
//   - "host:port"            → host must end in .flycast or .internal
//   - "http://host[:port][/]" → port 80 unless given
//
// Host names are case-insensitive and returned in lower case. Every problem is
// reported, each naming fldPath, the offending entry and the fix; on any
// problem the returned slice is nil.
func ParseTargets(value string, fldPath *field.Path) ([]Target, field.ErrorList) {
	targets, errs := parseTargetList(value, fldPath)
	if len(errs) > 0 {
		return nil, errs
	}
	return targets, nil
}

// parseTargetList is ParseTargets, but it also returns the entries that did
// parse, so that Validate can report conflicts of the good entries too.
func parseTargetList(value string, fldPath *field.Path) ([]Target, field.ErrorList) {
	if strings.TrimSpace(value) == "" {
		return nil, field.ErrorList{field.Required(fldPath, "list one or more Fly targets, "+targetExamples)}
	}
	entries := strings.Split(value, ",")
	if len(entries) > maxReportedEntries {
		return nil, field.ErrorList{tooManyTargets(fldPath, len(entries))}
	}

	var errs field.ErrorList
	if len(entries) > MaxTargets {
		errs = append(errs, tooManyTargets(fldPath, len(entries)))
	}
	targets := make([]Target, 0, len(entries))
	firstIndex := make(map[Target]int, len(entries))
	for i, raw := range entries {
		entry := strings.TrimSpace(raw)
		if entry == "" {
			errs = append(errs, field.Invalid(fldPath, shorten(value),
				fmt.Sprintf("entry %d is empty; remove the extra comma", i+1)))
			continue
		}
		target, problem := parseTarget(entry)
		if problem != "" {
			errs = append(errs, field.Invalid(fldPath, shorten(entry), problem))
			continue
		}
		if first, seen := firstIndex[target]; seen {
			errs = append(errs, &field.Error{
				Type:     field.ErrorTypeDuplicate,
				Field:    fldPath.String(),
				BadValue: shorten(entry),
				Detail: fmt.Sprintf("entry %d is %s again (entry %d already is); list each target once",
					i+1, target, first+1),
			})
			continue
		}
		firstIndex[target] = i
		targets = append(targets, target)
	}
	if len(targets) > MaxTargets {
		targets = targets[:MaxTargets] // more would not fit the loopback plan
	}
	return targets, errs
}

func tooManyTargets(fldPath *field.Path, count int) *field.Error {
	return &field.Error{
		Type:     field.ErrorTypeTooMany,
		Field:    fldPath.String(),
		BadValue: count,
		Detail: fmt.Sprintf("at most %d targets per pod; drop some, or serve them to many pods through a MachineProxy",
			MaxTargets),
	}
}

// parseTarget parses one trimmed, non-empty entry. It returns a non-empty
// problem (what is wrong and how to fix it) when the entry is not a target.
func parseTarget(entry string) (Target, string) {
	for _, r := range entry {
		if r <= ' ' || r >= 0x7f {
			return Target{}, fmt.Sprintf(`unexpected character %+q; a target is "app", "host:port" or "http://host[:port]"`, r)
		}
	}
	switch {
	case hasPrefixFold(entry, "http://"):
		return parseHTTPTarget(entry[len("http://"):])
	case hasPrefixFold(entry, "https://"):
		return Target{}, `https:// is not supported: the sidecar forwards TCP and TLS passes through it, so write "host:443" to reach port 443, or "http://host" for plain HTTP`
	case strings.Contains(entry, "://"):
		scheme, _, _ := strings.Cut(entry, "://")
		return Target{}, fmt.Sprintf(`scheme %q is not supported; write "host:port" (e.g. db.internal:5432) or "http://host"`, shorten(scheme))
	}
	if bad := strings.IndexAny(entry, "/?#@[]"); bad >= 0 {
		return Target{}, fmt.Sprintf(`unexpected %q; a target is "app", "host:port" or "http://host[:port]"`, entry[bad:bad+1])
	}
	if host, port, hasPort := strings.Cut(entry, ":"); hasPort {
		return hostPortTarget(host, port)
	}
	if strings.HasSuffix(strings.ToLower(entry), flycastSuffix) {
		// "twi-ollama.flycast" reads like the URL users already type on
		// Fly; Flycast is HTTP, so port 80 as for "http://".
		return hostPortTarget(entry, strconv.Itoa(defaultTargetPort))
	}
	if strings.Contains(entry, ".") {
		return Target{}, fmt.Sprintf(`a host needs a port: write "%s:<port>", or "http://%s" for port 80`, shorten(entry), shorten(entry))
	}
	app := strings.ToLower(entry)
	if problem := validateLabel(app, "app name"); problem != "" {
		return Target{}, problem
	}
	return Target{Host: app + flycastSuffix, Port: defaultTargetPort}, ""
}

// parseHTTPTarget parses what follows "http://": host[:port][/].
func parseHTTPTarget(rest string) (Target, string) {
	switch {
	case strings.Contains(rest, "@"):
		return Target{}, "user info (user:password@) is not allowed; credentials never belong in annotations"
	case strings.Contains(rest, "?"):
		return Target{}, `a query string is not part of a target; write "http://host[:port]"`
	case strings.Contains(rest, "#"):
		return Target{}, `a fragment is not part of a target; write "http://host[:port]"`
	}
	hostPort, path, _ := strings.Cut(rest, "/")
	if path != "" {
		return Target{}, `a path is not part of a target (the app keeps using its own paths); write "http://host[:port]"`
	}
	if host, port, hasPort := strings.Cut(hostPort, ":"); hasPort {
		return hostPortTarget(host, port)
	}
	if hostPort != "" && !strings.Contains(hostPort, ".") {
		return Target{}, fmt.Sprintf(`the URL needs the full host name; write "http://%s.flycast"`, shorten(hostPort))
	}
	return hostPortTarget(hostPort, strconv.Itoa(defaultTargetPort))
}

func hostPortTarget(rawHost, rawPort string) (Target, string) {
	host := strings.ToLower(rawHost)
	if problem := validateHost(host); problem != "" {
		return Target{}, problem
	}
	port, problem := parsePort(rawPort)
	if problem != "" {
		return Target{}, problem
	}
	return Target{Host: host, Port: port}, ""
}

// validateHost checks a lower-cased host name against what Fly's private
// DNS serves: DNS labels ending in .flycast or .internal.
func validateHost(host string) string {
	switch {
	case host == "":
		return `the host is empty; write "<app>.flycast:<port>" or "<app>.internal:<port>"`
	case strings.HasSuffix(host, "."):
		return "remove the trailing dot from the host name"
	case strings.TrimPrefix(host, ".") == flycastSuffix[1:]:
		return `the host names no app; write "<app>.flycast"`
	case strings.TrimPrefix(host, ".") == internalSuffix[1:]:
		return `the host names no app; write "<app>.internal"`
	case !strings.HasSuffix(host, flycastSuffix) && !strings.HasSuffix(host, internalSuffix):
		return fmt.Sprintf("host %q is not a Fly private host: it must end in .flycast or .internal (e.g. twi-ollama.flycast)", shorten(host))
	case len(host) > maxHostLength:
		return fmt.Sprintf("host name is %d characters long; at most %d are allowed", len(host), maxHostLength)
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" {
			return fmt.Sprintf("host %q has an empty label (two dots in a row); remove the extra dot", shorten(host))
		}
		if problem := validateLabel(label, "host label"); problem != "" {
			return problem
		}
	}
	return ""
}

// validateLabel checks an RFC 1123 DNS label; what names the kind of label.
func validateLabel(label, what string) string {
	if len(label) > 63 || !dnsLabelPattern.MatchString(label) {
		return fmt.Sprintf("%s %q is not a DNS label: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit",
			what, shorten(label))
	}
	return ""
}

func parsePort(raw string) (int32, string) {
	if raw == "" {
		return 0, `the port is empty; write "host:<port>", e.g. db.internal:5432`
	}
	if len(raw) > 5 || strings.Trim(raw, "0123456789") != "" {
		return 0, fmt.Sprintf("port %q is not a number from 1 to 65535", shorten(raw))
	}
	port, err := strconv.Atoi(raw)
	if err != nil || port < 1 || port > 65535 {
		return 0, fmt.Sprintf("port %q is not a number from 1 to 65535", raw)
	}
	return int32(port), ""
}

// ValidateOrgSlug checks a Fly organization slug such as "personal" or
// "acme-339": a lower-case DNS label.
func ValidateOrgSlug(slug string, fldPath *field.Path) field.ErrorList {
	if slug == "" {
		return field.ErrorList{field.Invalid(fldPath, slug,
			"the org slug is empty; set it (see `fly orgs list`) or remove the annotation to use the default org")}
	}
	if len(slug) > 63 || !dnsLabelPattern.MatchString(slug) {
		return field.ErrorList{field.Invalid(fldPath, shorten(slug),
			"not a Fly org slug: use the slug `fly orgs list` shows (lower-case letters, digits and '-')")}
	}
	return nil
}

// ValidateRegion checks a Fly region code such as "iad" or "ams".
func ValidateRegion(code string, fldPath *field.Path) field.ErrorList {
	if !regionCodePattern.MatchString(code) {
		return field.ErrorList{field.Invalid(fldPath, shorten(code),
			"not a Fly region code: use three lower-case letters such as iad or ams (see `fly platform regions`), or remove the annotation for the default")}
	}
	return nil
}

// shorten keeps user input quoted back in messages readable.
func shorten(s string) string {
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

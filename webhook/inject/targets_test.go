package inject

import (
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

var targetPath = field.NewPath("metadata", "annotations").Key(AnnotationTarget)

func TestParseTargetsAccepts(t *testing.T) {
	tests := []struct {
		name  string
		value string
		want  []Target
	}{
		{"bare app", "twi-ollama", []Target{{"twi-ollama.flycast", 80}}},
		{"flycast host means port 80", "twi-ollama.flycast", []Target{{"twi-ollama.flycast", 80}}},
		{"flycast host and port", "twi-ollama.flycast:11434", []Target{{"twi-ollama.flycast", 11434}}},
		{"internal host and port", "db.internal:5432", []Target{{"db.internal", 5432}}},
		{"regional internal host", "iad.api.internal:8080", []Target{{"iad.api.internal", 8080}}},
		{"http url", "http://twi-ollama.flycast", []Target{{"twi-ollama.flycast", 80}}},
		{"http url with slash", "http://twi-ollama.flycast/", []Target{{"twi-ollama.flycast", 80}}},
		{"http url with port", "http://twi-ollama.flycast:8080", []Target{{"twi-ollama.flycast", 8080}}},
		{"scheme and host are case-insensitive", "HTTP://Twi-Ollama.FLYCAST", []Target{{"twi-ollama.flycast", 80}}},
		{"list with spaces", " twi-ollama , db.internal:5432 ", []Target{{"twi-ollama.flycast", 80}, {"db.internal", 5432}}},
		{"same host, two ports", "db.internal:5432,db.internal:6432", []Target{{"db.internal", 5432}, {"db.internal", 6432}}},
		{"port bounds", "a.flycast:1,b.flycast:65535", []Target{{"a.flycast", 1}, {"b.flycast", 65535}}},
		{"max targets", strings.Repeat("a.flycast:1,", MaxTargets-1) + "b.flycast:1", nil}, // checked below
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := ParseTargets(tt.value, targetPath)
			if len(errs) > 0 && tt.name != "max targets" {
				t.Fatalf("ParseTargets(%q) errors: %v", tt.value, errs)
			}
			if tt.want != nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseTargets(%q) = %v, want %v", tt.value, got, tt.want)
			}
		})
	}

	t.Run("max targets", func(t *testing.T) {
		entries := make([]string, MaxTargets)
		for i := range entries {
			entries[i] = "app" + string(rune('a'+i))
		}
		got, errs := ParseTargets(strings.Join(entries, ","), targetPath)
		if len(errs) > 0 || len(got) != MaxTargets {
			t.Fatalf("%d targets: got %d, errors %v", MaxTargets, len(got), errs)
		}
	})
}

func TestParseTargetsRejects(t *testing.T) {
	const at = "metadata.annotations[glaceon.fly/target]: "
	tests := []struct {
		name  string
		value string
		want  []string // exact messages, in order
	}{
		{"empty", "  ", []string{at + `Required value: list one or more Fly targets, e.g. "twi-ollama", "db.internal:5432" or "http://twi-ollama.flycast"`}},
		{"empty entry", "twi-ollama,,db.internal:5432", []string{at + `Invalid value: "twi-ollama,,db.internal:5432": entry 2 is empty; remove the extra comma`}},
		{"trailing comma", "twi-ollama,", []string{at + `Invalid value: "twi-ollama,": entry 2 is empty; remove the extra comma`}},
		{"not a fly host", "example.com:80", []string{at + `Invalid value: "example.com:80": host "example.com" is not a Fly private host: it must end in .flycast or .internal (e.g. twi-ollama.flycast)`}},
		{"host without port", "db.internal", []string{at + `Invalid value: "db.internal": a host needs a port: write "db.internal:<port>", or "http://db.internal" for port 80`}},
		{"empty port", "db.internal:", []string{at + `Invalid value: "db.internal:": the port is empty; write "host:<port>", e.g. db.internal:5432`}},
		{"port zero", "db.internal:0", []string{at + `Invalid value: "db.internal:0": port "0" is not a number from 1 to 65535`}},
		{"port too big", "db.internal:65536", []string{at + `Invalid value: "db.internal:65536": port "65536" is not a number from 1 to 65535`}},
		{"port not a number", "db.internal:pg", []string{at + `Invalid value: "db.internal:pg": port "pg" is not a number from 1 to 65535`}},
		{"signed port", "db.internal:+80", []string{at + `Invalid value: "db.internal:+80": port "+80" is not a number from 1 to 65535`}},
		{"two colons", "db.internal:80:81", []string{at + `Invalid value: "db.internal:80:81": port "80:81" is not a number from 1 to 65535`}},
		{"empty host", ":80", []string{at + `Invalid value: ":80": the host is empty; write "<app>.flycast:<port>" or "<app>.internal:<port>"`}},
		{"bare suffix", "flycast:80", []string{at + `Invalid value: "flycast:80": the host names no app; write "<app>.flycast"`}},
		{"dot suffix", ".internal:80", []string{at + `Invalid value: ".internal:80": the host names no app; write "<app>.internal"`}},
		{"trailing dot", "db.internal.:5432", []string{at + `Invalid value: "db.internal.:5432": remove the trailing dot from the host name`}},
		{"double dot", "db..internal:5432", []string{at + `Invalid value: "db..internal:5432": host "db..internal" has an empty label (two dots in a row); remove the extra dot`}},
		{"bad label", "-db.internal:5432", []string{at + `Invalid value: "-db.internal:5432": host label "-db" is not a DNS label: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit`}},
		{"underscore", "my_db.internal:5432", []string{at + `Invalid value: "my_db.internal:5432": host label "my_db" is not a DNS label: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit`}},
		{"bad app name", "twi_ollama", []string{at + `Invalid value: "twi_ollama": app name "twi_ollama" is not a DNS label: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit`}},
		{"https", "https://twi-ollama.flycast", []string{at + `Invalid value: "https://twi-ollama.flycast": https:// is not supported: the sidecar forwards TCP and TLS passes through it, so write "host:443" to reach port 443, or "http://host" for plain HTTP`}},
		{"other scheme", "postgres://db.internal:5432", []string{at + `Invalid value: "postgres://db.internal:5432": scheme "postgres" is not supported; write "host:port" (e.g. db.internal:5432) or "http://host"`}},
		{"url path", "http://twi-ollama.flycast/api", []string{at + `Invalid value: "http://twi-ollama.flycast/api": a path is not part of a target (the app keeps using its own paths); write "http://host[:port]"`}},
		{"url userinfo", "http://user:pw@twi-ollama.flycast", []string{at + `Invalid value: "http://user:pw@twi-ollama.flycast": user info (user:password@) is not allowed; credentials never belong in annotations`}},
		{"url query", "http://twi-ollama.flycast/?x=1", []string{at + `Invalid value: "http://twi-ollama.flycast/?x=1": a query string is not part of a target; write "http://host[:port]"`}},
		{"url fragment", "http://twi-ollama.flycast#top", []string{at + `Invalid value: "http://twi-ollama.flycast#top": a fragment is not part of a target; write "http://host[:port]"`}},
		{"url bare app", "http://twi-ollama", []string{at + `Invalid value: "http://twi-ollama": the URL needs the full host name; write "http://twi-ollama.flycast"`}},
		{"url empty host", "http://", []string{at + `Invalid value: "http://": the host is empty; write "<app>.flycast:<port>" or "<app>.internal:<port>"`}},
		{"path without scheme", "twi-ollama.flycast:80/api", []string{at + `Invalid value: "twi-ollama.flycast:80/api": unexpected "/"; a target is "app", "host:port" or "http://host[:port]"`}},
		{"ipv6 literal", "[::1]:80", []string{at + `Invalid value: "[::1]:80": unexpected "["; a target is "app", "host:port" or "http://host[:port]"`}},
		{"inner space", "twi ollama", []string{at + `Invalid value: "twi ollama": unexpected character ' '; a target is "app", "host:port" or "http://host[:port]"`}},
		{"non-ascii", "twi-\u212aollama", []string{at + "Invalid value: \"twi-\u212aollama\": unexpected character '\\u212a'; a target is \"app\", \"host:port\" or \"http://host[:port]\""}},
		{"duplicate in another spelling", "twi-ollama,http://twi-ollama.flycast/", []string{at + `Duplicate value: "http://twi-ollama.flycast/": entry 2 is twi-ollama.flycast:80 again (entry 1 already is); list each target once`}},
		{"all problems at once", "example.com:80,db.internal:0,twi-ollama,twi-ollama", []string{
			at + `Invalid value: "example.com:80": host "example.com" is not a Fly private host: it must end in .flycast or .internal (e.g. twi-ollama.flycast)`,
			at + `Invalid value: "db.internal:0": port "0" is not a number from 1 to 65535`,
			at + `Duplicate value: "twi-ollama": entry 4 is twi-ollama.flycast:80 again (entry 3 already is); list each target once`,
		}},
		{"too many", strings.Repeat("a,", MaxTargets) + "b", []string{
			at + `Too many: 17: at most 16 targets per pod; drop some, or serve them to many pods through a MachineProxy`,
			at + `Duplicate value: "a": entry 2 is a.flycast:80 again (entry 1 already is); list each target once`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := ParseTargets(tt.value, targetPath)
			if got != nil {
				t.Errorf("ParseTargets(%q) returned targets %v along with errors", tt.value, got)
			}
			msgs := errorMessages(errs)
			if tt.name == "too many" {
				msgs = msgs[:2] // the remaining duplicates repeat the second message
			}
			if !reflect.DeepEqual(msgs, tt.want) {
				t.Errorf("ParseTargets(%q) errors:\n got %q\nwant %q", tt.value, msgs, tt.want)
			}
		})
	}

	t.Run("absurdly many entries report only the count", func(t *testing.T) {
		_, errs := ParseTargets(strings.Repeat(",", 1000), targetPath)
		if len(errs) != 1 || errs[0].Type != field.ErrorTypeTooMany {
			t.Fatalf("got %d errors (%v), want one Too many", len(errs), errs)
		}
	})
	t.Run("long values are shortened in messages", func(t *testing.T) {
		_, errs := ParseTargets(strings.Repeat("x", 500)+".com:80", targetPath)
		if len(errs) != 1 || len(errs[0].Error()) > 400 {
			t.Fatalf("got %v", errs)
		}
	})
}

func TestTargetStringRoundTrip(t *testing.T) {
	targets := []Target{{"twi-ollama.flycast", 80}, {"db.internal", 5432}}
	value := FormatTargets(targets)
	if value != "twi-ollama.flycast:80,db.internal:5432" {
		t.Fatalf("FormatTargets = %q", value)
	}
	got, errs := ParseTargets(value, targetPath)
	if len(errs) > 0 || !reflect.DeepEqual(got, targets) {
		t.Fatalf("ParseTargets(FormatTargets(x)) = %v, %v; want %v", got, errs, targets)
	}
}

func TestValidateOrgAndRegion(t *testing.T) {
	orgPath := field.NewPath("metadata", "annotations").Key(AnnotationOrg)
	regionPath := field.NewPath("metadata", "annotations").Key(AnnotationRegion)
	for _, ok := range []string{"personal", "acme", "lubien-339"} {
		if errs := ValidateOrgSlug(ok, orgPath); len(errs) > 0 {
			t.Errorf("ValidateOrgSlug(%q) = %v", ok, errs)
		}
	}
	for _, ok := range []string{"iad", "ams", "syd"} {
		if errs := ValidateRegion(ok, regionPath); len(errs) > 0 {
			t.Errorf("ValidateRegion(%q) = %v", ok, errs)
		}
	}
	tests := []struct {
		name string
		errs field.ErrorList
		want string
	}{
		{"empty org", ValidateOrgSlug("", orgPath),
			"metadata.annotations[glaceon.fly/org]: Invalid value: \"\": the org slug is empty; set it (see `fly orgs list`) or remove the annotation to use the default org"},
		{"bad org", ValidateOrgSlug("Acme Inc", orgPath),
			"metadata.annotations[glaceon.fly/org]: Invalid value: \"Acme Inc\": not a Fly org slug: use the slug `fly orgs list` shows (lower-case letters, digits and '-')"},
		{"bad region", ValidateRegion("us-east", regionPath),
			"metadata.annotations[glaceon.fly/region]: Invalid value: \"us-east\": not a Fly region code: use three lower-case letters such as iad or ams (see `fly platform regions`), or remove the annotation for the default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if msgs := errorMessages(tt.errs); len(msgs) != 1 || msgs[0] != tt.want {
				t.Errorf("got %q\nwant %q", msgs, tt.want)
			}
		})
	}
}

// FuzzParseTargets checks that the parser never panics, that what it accepts
// is within the grammar, and that accepted values re-render to a canonical
// form that parses back to the same targets.
func FuzzParseTargets(f *testing.F) {
	for _, seed := range []string{
		"twi-ollama", "twi-ollama.flycast:11434", "db.internal:5432,iad.api.internal:8080",
		"http://twi-ollama.flycast", "http://twi-ollama.flycast:8080/", "HTTP://A.FLYCAST",
		"https://x.flycast", "a,,b", "x.internal:0", "[::1]:80", "http://u@x.flycast", " a , b ",
		"db.internal:5432,db.internal:5432", "a.b.c.internal:65535", "\u212a.flycast:80",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, value string) {
		targets, errs := ParseTargets(value, targetPath)
		if len(errs) > 0 {
			if targets != nil {
				t.Fatalf("ParseTargets(%q) returned targets and errors", value)
			}
			for _, e := range errs {
				if e.Field != targetPath.String() || e.Detail == "" && e.Type != field.ErrorTypeRequired {
					t.Fatalf("ParseTargets(%q) error without field or detail: %v", value, e)
				}
			}
			return
		}
		if len(targets) == 0 || len(targets) > MaxTargets {
			t.Fatalf("ParseTargets(%q) accepted %d targets", value, len(targets))
		}
		seen := map[Target]bool{}
		for _, tg := range targets {
			if seen[tg] {
				t.Fatalf("ParseTargets(%q) accepted duplicate %v", value, tg)
			}
			seen[tg] = true
			if tg.Port < 1 || tg.Port > 65535 || validateHost(tg.Host) != "" {
				t.Fatalf("ParseTargets(%q) accepted invalid %v", value, tg)
			}
		}
		canonical := FormatTargets(targets)
		again, errs := ParseTargets(canonical, targetPath)
		if len(errs) > 0 || !reflect.DeepEqual(again, targets) {
			t.Fatalf("ParseTargets(%q) = %v, but its canonical form %q parses to %v, %v", value, targets, canonical, again, errs)
		}
	})
}

func errorMessages(errs field.ErrorList) []string {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return msgs
}

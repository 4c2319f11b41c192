package inject

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/glaceon/glaceon/flyapi/target"
	"github.com/glaceon/glaceon/flyapi/target/targettest"
)

var targetPath = field.NewPath("metadata", "annotations").Key(AnnotationTarget)

// TestParseTargetsTable runs the shared grammar table (targettest) through
// ParseTargets: every problem must come back as the field error of its kind
// at the annotation's path, with the grammar's message.
func TestParseTargetsTable(t *testing.T) {
	const at = "metadata.annotations[glaceon.fly/target]: "
	for _, c := range targettest.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			got, errs := ParseTargets(c.Value, targetPath)
			if len(c.Problems) == 0 {
				if len(errs) > 0 {
					t.Fatalf("ParseTargets(%q) errors: %v", c.Value, errs)
				}
				if FormatTargets(got) != strings.Join(c.Targets, ",") {
					t.Fatalf("ParseTargets(%q) = %v, want %q", c.Value, got, c.Targets)
				}
				return
			}
			if got != nil {
				t.Errorf("ParseTargets(%q) returned targets %v along with errors", c.Value, got)
			}
			var want []string
			for _, p := range c.Problems {
				switch p.Kind {
				case "Required":
					want = append(want, at+"Required value: "+p.Detail)
				case "TooMany":
					want = append(want, fmt.Sprintf("%sToo many: %d: %s", at, p.Count, p.Detail))
				case "Duplicate":
					want = append(want, fmt.Sprintf("%sDuplicate value: %q: %s", at, p.Value, p.Detail))
				default:
					want = append(want, fmt.Sprintf("%sInvalid value: %q: %s", at, p.Value, p.Detail))
				}
			}
			msgs := errorMessages(errs)
			if c.FirstProblemsOnly && len(msgs) > len(want) {
				msgs = msgs[:len(want)]
			}
			if !reflect.DeepEqual(msgs, want) {
				t.Errorf("ParseTargets(%q) errors:\n got %q\nwant %q", c.Value, msgs, want)
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
	targets := []Target{{Host: "twi-ollama.flycast", Port: 80}, {Host: "db.internal", Port: 5432}}
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
			if tg.Port == 0 || target.CheckHost(tg.Host) != nil {
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

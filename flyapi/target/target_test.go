package target

import (
	"reflect"
	"strings"
	"testing"

	"github.com/glaceon/glaceon/flyapi/target/targettest"
)

var kindNames = map[Kind]string{Invalid: "Invalid", Required: "Required", Duplicate: "Duplicate", TooMany: "TooMany"}

// TestTable runs the shared table (targettest) through ParseList.
func TestTable(t *testing.T) {
	cases := targettest.Cases()
	if len(cases) < 40 {
		t.Fatalf("the table has %d cases; cases.json did not load", len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			targets, problems := ParseList(c.Value)
			if len(c.Problems) == 0 {
				if len(problems) > 0 {
					t.Fatalf("ParseList(%q) problems: %v", c.Value, problems)
				}
				var got []string
				for _, tg := range targets {
					got = append(got, tg.String())
				}
				if !reflect.DeepEqual(got, c.Targets) {
					t.Fatalf("ParseList(%q) = %q, want %q", c.Value, got, c.Targets)
				}
				return
			}
			var got []targettest.Problem
			for _, p := range problems {
				got = append(got, targettest.Problem{Kind: kindNames[p.Kind], Value: p.Value, Count: p.Count, Detail: p.Detail})
			}
			if c.FirstProblemsOnly && len(got) > len(c.Problems) {
				got = got[:len(c.Problems)]
			}
			if !reflect.DeepEqual(got, c.Problems) {
				t.Fatalf("ParseList(%q) problems:\n got %+v\nwant %+v", c.Value, got, c.Problems)
			}
		})
	}
}

func TestParseListLimits(t *testing.T) {
	t.Run("absurdly many entries report only the count", func(t *testing.T) {
		_, problems := ParseList(strings.Repeat(",", 1000))
		if len(problems) != 1 || problems[0].Kind != TooMany || problems[0].Count != 1001 {
			t.Fatalf("got %v, want one TooMany", problems)
		}
	})
	t.Run("long values are shortened in messages", func(t *testing.T) {
		_, problems := ParseList(strings.Repeat("x", 500) + ".com:80")
		if len(problems) != 1 || len(problems[0].Error()) > 400 {
			t.Fatalf("got %v", problems)
		}
	})
	t.Run("good entries are returned with the problems", func(t *testing.T) {
		targets, problems := ParseList("db.internal:5432,example.com:80")
		if len(problems) != 1 || !reflect.DeepEqual(targets, []Target{{"db.internal", 5432}}) {
			t.Fatalf("got %v, %v", targets, problems)
		}
	})
}

func TestFormatRoundTrip(t *testing.T) {
	targets := []Target{{"twi-ollama.flycast", 80}, {"db.internal", 5432}}
	value := Format(targets)
	if value != "twi-ollama.flycast:80,db.internal:5432" {
		t.Fatalf("Format = %q", value)
	}
	got, problems := ParseList(value)
	if len(problems) > 0 || !reflect.DeepEqual(got, targets) {
		t.Fatalf("ParseList(Format(x)) = %v, %v; want %v", got, problems, targets)
	}
}

func TestParsePort(t *testing.T) {
	for in, want := range map[string]uint16{"1": 1, "80": 80, "65535": 65535, "08080": 8080} {
		if got, err := ParsePort(in); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "65536", "-1", "+1", " 1", "1 ", "0x10", "1e3", "99999999999999999999"} {
		if _, err := ParsePort(in); err == nil {
			t.Errorf("ParsePort(%q) accepted", in)
		}
	}
	if n, ok := ParseUint16("0"); !ok || n != 0 {
		t.Errorf("ParseUint16(0) = %d, %v", n, ok)
	}
}

func TestCheckHostName(t *testing.T) {
	for _, ok := range []string{"localhost", "ord1.gateway.6pn.dev", "ORD1.Gateway.6pn.dev.", "a"} {
		if err := CheckHostName(ok); err != nil {
			t.Errorf("CheckHostName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "a..b", "-a.b", "a b", "a_b!", strings.Repeat("a", 64), strings.Repeat("a.", 127) + "aa"} {
		if err := CheckHostName(bad); err == nil {
			t.Errorf("CheckHostName(%q) accepted", bad)
		}
	}
}

func TestParseForward(t *testing.T) {
	for _, s := range []string{
		"127.0.0.2:80=twi-ollama.flycast:11434",
		"0.0.0.0:8080=iad.api.internal:8080",
		"[::1]:5432=db.internal:5432",
		"127.0.0.5:6379=top2.nearest.of.redis.internal:6379",
	} {
		f, err := ParseForward(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if f.String() != s {
			t.Fatalf("round trip %q -> %q", s, f.String())
		}
	}
	f, err := ParseForward(" 127.0.0.3:5432 = DB.Internal.:5432 ")
	if err != nil || f.Host != "db.internal" || f.Port != 5432 {
		t.Fatalf("absolute upper-case host: %+v, %v", f, err)
	}
	bad := map[string]string{
		"127.0.0.2:80":                 "LISTEN=TARGET",
		"127.0.0.2:80=example.com:80":  ".flycast or .internal",
		"127.0.0.2:80=a.flycast":       "HOST:PORT",
		"127.0.0.2:80=a.flycast:0":     "from 1 to 65535",
		"127.0.0.2:80=a.flycast:65536": "from 1 to 65535",
		"127.0.0.2:70000=a.flycast:80": "from 1 to 65535",
		"localhost:80=a.flycast:80":    "IP literal",
		"::1:80=a.flycast:80":          "IP:PORT",
		"127.0.0.2:80=a..flycast:80":   "label",
		"127.0.0.2:80=a_b!.flycast:80": "not a DNS label",
		"127.0.0.2:80=[::1]:80":        "HOST:PORT",
		"127.0.0.2:80=a b.flycast:80":  "HOST:PORT",
	}
	for in, want := range bad {
		if _, err := ParseForward(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseForward(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}

// FuzzParseList checks that the parser never panics, that what it accepts
// is within the grammar, and that accepted values re-render to a canonical
// form that parses back to the same targets.
func FuzzParseList(f *testing.F) {
	for _, c := range targettest.Cases() {
		f.Add(c.Value)
	}
	f.Fuzz(func(t *testing.T, value string) {
		targets, problems := ParseList(value)
		if len(problems) > 0 {
			for _, p := range problems {
				if p.Detail == "" || strings.ContainsAny(p.Error(), "\n\r") && !strings.ContainsAny(value, "\n\r") {
					t.Fatalf("ParseList(%q) problem without detail or on several lines: %#v", value, p)
				}
			}
			return
		}
		if len(targets) == 0 || len(targets) > MaxTargets {
			t.Fatalf("ParseList(%q) accepted %d targets", value, len(targets))
		}
		seen := map[Target]bool{}
		for _, tg := range targets {
			if seen[tg] {
				t.Fatalf("ParseList(%q) accepted duplicate %v", value, tg)
			}
			seen[tg] = true
			if tg.Port < 1 || CheckHost(tg.Host) != nil {
				t.Fatalf("ParseList(%q) accepted invalid %v", value, tg)
			}
		}
		canonical := Format(targets)
		again, problems := ParseList(canonical)
		if len(problems) > 0 || !reflect.DeepEqual(again, targets) {
			t.Fatalf("ParseList(%q) = %v, but its canonical form %q parses to %v, %v", value, targets, canonical, again, problems)
		}
		for _, tg := range targets {
			if back, err := ParseHostPort(tg.String()); err != nil || back != tg {
				t.Fatalf("ParseHostPort(%q) = %v, %v", tg, back, err)
			}
		}
	})
}

func FuzzParseForward(f *testing.F) {
	for _, s := range []string{"127.0.0.2:80=a.flycast:80", "[::1]:1=b.internal:65535", "=", "a=b", "1.2.3.4:0=x.flycast:1", "0.0.0.0:8080=a.b.c.internal:8080", "[fe80::1%eth0]:80=a.flycast:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fw, err := ParseForward(s)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") && !strings.ContainsAny(s, "\n\r") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if !fw.Listen.IsValid() || fw.Listen.Port() == 0 || fw.Port == 0 {
			t.Fatalf("accepted invalid %q: %+v", s, fw)
		}
		if CheckHost(fw.Host) != nil {
			t.Fatalf("accepted host %q", fw.Host)
		}
		// The canonical form parses to the same forward.
		again, err := ParseForward(fw.String())
		if err != nil || again != fw {
			t.Fatalf("canonical %q of %q does not round-trip: %+v %v", fw.String(), s, again, err)
		}
	})
}

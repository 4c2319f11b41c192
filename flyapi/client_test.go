package flyapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/glaceon/glaceon/flyapi/version"
	"github.com/glaceon/glaceon/flyapi/wgquick"
)

func TestRequestShape(t *testing.T) {
	f := newFakeFly(t)
	c := f.client(t)
	if _, err := c.NearestGatewayRegion(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Organization(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	reqs := f.recorded()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	// No variables → JSON null, exactly like superfly/graphql.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(reqs[0].raw, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw["variables"]) != "null" || len(raw) != 2 {
		t.Fatalf("body %s: want exactly query and variables:null", reqs[0].raw)
	}
	if !strings.Contains(reqs[0].Query, "nearestRegion(wireguardGateway: true)") {
		t.Fatalf("query %q", reqs[0].Query)
	}
	if reqs[1].Variables["slug"] != "acme" {
		t.Fatalf("variables %v", reqs[1].Variables)
	}
	h := reqs[0].header
	for k, want := range map[string]string{
		"Content-Type":  "application/json; charset=utf-8",
		"Accept":        "application/json; charset=utf-8",
		"Authorization": testTokenHdr,
		"User-Agent":    "glaceon/" + version.Version,
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
}

func TestBearerTokenHeader(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("Authorization") + "|" + r.URL.Path)
		_, _ = w.Write([]byte(`{"data":{"nearestRegion":{"code":"ams"}}}`))
	}))
	defer srv.Close()
	c, err := New(Options{BaseURL: srv.URL + "/", Token: "bearer fo1_user", UserAgent: "x/1"})
	if err != nil {
		t.Fatal(err)
	}
	code, err := c.NearestGatewayRegion(context.Background())
	if err != nil || code != "ams" {
		t.Fatalf("%q %v", code, err)
	}
	if got.Load() != "Bearer fo1_user|/graphql" {
		t.Fatalf("got %v", got.Load())
	}
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no token", Options{}, "token is empty"},
		{"bad scheme", Options{Token: "x", BaseURL: "ftp://api.fly.io"}, "https://"},
		{"no host", Options{Token: "x", BaseURL: "https://"}, "no host"},
		{"credentials", Options{Token: "x", BaseURL: "https://u:p@api.fly.io"}, "credentials"},
		{"query", Options{Token: "x", BaseURL: "https://api.fly.io/?a=b"}, "query"},
		{"gateway port", Options{Token: "x", GatewayPort: 70000}, "gateway port"},
		{"token source named", Options{Token: " ", TokenSource: "FLY_ACCESS_TOKEN"}, "FLY_ACCESS_TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	c, err := New(Options{Token: "fm2_x"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Endpoint() != "https://api.fly.io/graphql" || c.GatewayPort() != wgquick.DefaultGatewayPort || c.maxRetries != DefaultMaxRetries {
		t.Fatalf("defaults: %s %d %d", c.Endpoint(), c.GatewayPort(), c.maxRetries)
	}
	c, _ = New(Options{Token: "fm2_x", MaxRetries: -1, GatewayPort: 1234})
	if c.maxRetries != 0 || c.GatewayPort() != 1234 {
		t.Fatal("MaxRetries<0 must mean none; GatewayPort carried")
	}
}

func TestSecretsNotPrinted(t *testing.T) {
	const secret = "fm2_TOPSECRETtokenPAYLOAD"
	opts := Options{Token: secret, TokenSource: "FLY_API_TOKEN"}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := NewTokenHolder(secret, "secret ns/x")
	if err != nil {
		t.Fatal(err)
	}
	hc, err := New(Options{Tokens: holder})
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		for name, v := range map[string]any{"Options": opts, "*Options": &opts, "*Client": c, "*TokenHolder": holder, "provider *Client": hc, "provider Options": Options{Tokens: holder}} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, "TOPSECRET") || strings.Contains(out, fmt.Sprintf("%x", "TOPSECRET")) {
				t.Errorf("%s %s leaks the token: %s", name, verb, out)
			}
		}
	}
}

func TestOptionsFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Options
		wantErr string
	}{
		{"api token preferred", map[string]string{"FLY_API_TOKEN": "fm2_a", "FLY_ACCESS_TOKEN": "fo1_b"}, Options{Token: "fm2_a", TokenSource: "FLY_API_TOKEN"}, ""},
		{"access token fallback", map[string]string{"FLY_ACCESS_TOKEN": "fo1_b"}, Options{Token: "fo1_b", TokenSource: "FLY_ACCESS_TOKEN"}, ""},
		{"empty api token falls back", map[string]string{"FLY_API_TOKEN": "  ", "FLY_ACCESS_TOKEN": "fo1_b"}, Options{Token: "fo1_b", TokenSource: "FLY_ACCESS_TOKEN"}, ""},
		{"base url and port", map[string]string{"FLY_API_TOKEN": "x", "FLY_API_BASE_URL": "http://127.0.0.1:8080", "FLY_WG_GATEWAY_PORT": "51821"},
			Options{Token: "x", TokenSource: "FLY_API_TOKEN", BaseURL: "http://127.0.0.1:8080", GatewayPort: 51821}, ""},
		{"missing token names both", map[string]string{}, Options{}, "set FLY_API_TOKEN (or FLY_ACCESS_TOKEN)"},
		{"scheme-only token", map[string]string{"FLY_API_TOKEN": "FlyV1"}, Options{}, "invalid Fly API token in FLY_API_TOKEN"},
		{"bad base url", map[string]string{"FLY_API_TOKEN": "x", "FLY_API_BASE_URL": "api.fly.io"}, Options{}, "FLY_API_BASE_URL"},
		{"port zero", map[string]string{"FLY_API_TOKEN": "x", "FLY_WG_GATEWAY_PORT": "0"}, Options{}, "FLY_WG_GATEWAY_PORT"},
		{"port too big", map[string]string{"FLY_API_TOKEN": "x", "FLY_WG_GATEWAY_PORT": "65536"}, Options{}, "1..65535"},
		{"port not a number", map[string]string{"FLY_API_TOKEN": "x", "FLY_WG_GATEWAY_PORT": "udp"}, Options{}, "FLY_WG_GATEWAY_PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := optionsFromEnv(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if tok := tt.env["FLY_API_TOKEN"]; len(tok) > 3 && strings.Contains(err.Error(), tok) {
					t.Fatalf("error leaks token")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tt.want.String() || got.Token != tt.want.Token {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("real environment", func(t *testing.T) {
		t.Setenv("FLY_API_TOKEN", "")
		t.Setenv("FLY_ACCESS_TOKEN", "fo1_env")
		t.Setenv("FLY_API_BASE_URL", "")
		t.Setenv("FLY_WG_GATEWAY_PORT", "")
		o, err := OptionsFromEnv()
		if err != nil || o.Token != "fo1_env" || o.TokenSource != "FLY_ACCESS_TOKEN" {
			t.Fatalf("%v %v", o, err)
		}
	})
}

func TestOrganization(t *testing.T) {
	f := newFakeFly(t)
	c := f.client(t)
	ctx := context.Background()
	org, err := c.Organization(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if *org != f.orgs["acme"] {
		t.Fatalf("org = %+v", org)
	}
	_, err = c.Organization(ctx, "nope")
	if !IsNotFound(err) || !strings.Contains(err.Error(), `organization "nope" not found`) || !strings.Contains(err.Error(), "fly orgs list") {
		t.Fatalf("null org: %v", err)
	}
	f.inject("organization", fault{body: `{"data":null,"errors":[{"message":"Could not find Organization","path":["organization"]}]}`})
	_, err = c.Organization(ctx, "gone")
	if !IsNotFound(err) || !strings.Contains(err.Error(), `"gone"`) {
		t.Fatalf("Could not find: %v", err)
	}
	f.inject("organization", fault{body: `{"data":{"organization":{"id":"","slug":"acme"}}}`})
	if _, err = c.Organization(ctx, "acme"); err == nil || !strings.Contains(err.Error(), "organization.id") {
		t.Fatalf("empty id: %v", err)
	}
	f.inject("organization", fault{body: `{"data":{"organization":{"id":42}}}`})
	if _, err = c.Organization(ctx, "acme"); err == nil || !strings.Contains(err.Error(), "organization.id") {
		t.Fatalf("wrong type: %v", err)
	}
	before := f.count("organization")
	if _, err = c.Organization(ctx, "bad slug"); !IsInvalid(err) {
		t.Fatalf("bad slug: %v", err)
	}
	if f.count("organization") != before {
		t.Fatal("invalid input was sent")
	}
}

func TestNearestGatewayRegion(t *testing.T) {
	f := newFakeFly(t)
	c := f.client(t)
	if code, err := c.NearestGatewayRegion(context.Background()); err != nil || code != "ord" {
		t.Fatalf("%q %v", code, err)
	}
	f.inject("nearestRegion", fault{body: `{"data":{"nearestRegion":null}}`})
	if _, err := c.NearestGatewayRegion(context.Background()); !IsNotFound(err) {
		t.Fatalf("null region: %v", err)
	}
	f.inject("nearestRegion", fault{body: `{"data":{"nearestRegion":{"code":"<script>"}}}`})
	if _, err := c.NearestGatewayRegion(context.Background()); err == nil || !strings.Contains(err.Error(), "nearestRegion.code") {
		t.Fatalf("bad code: %v", err)
	}
}

// TestErrorMapping covers every mapping through a real HTTP exchange.
func TestErrorMapping(t *testing.T) {
	huge := `{"data":{"x":"` + strings.Repeat("a", MaxResponseSize) + `"}}`
	tests := []struct {
		name       string
		flt        fault
		kind       ErrorKind
		status     int
		code       string
		retryAfter time.Duration
		contains   []string
	}{
		{"http 401", fault{status: 401}, KindUnauthorized, 401, "", 0, []string{"Fly API rejected the token from FLY_API_TOKEN (HTTP 401)", "fly tokens create org", "set FLY_API_TOKEN"}},
		{"http 403 with graphql body", fault{status: 403, body: `{"errors":[{"message":"Not authorized to access this addWireGuardPeer"}]}`}, KindUnauthorized, 403, "", 0, []string{"HTTP 403", "Not authorized"}},
		{"code UNAUTHORIZED on 200", fault{body: `{"data":null,"errors":[{"message":"You must be authenticated to view this.","extensions":{"code":"UNAUTHORIZED"}}]}`}, KindUnauthorized, 200, "UNAUTHORIZED", 0, []string{"You must be authenticated", "FLY_API_TOKEN"}},
		{"code NOT_FOUND", fault{body: `{"errors":[{"message":"nope","extensions":{"code":"NOT_FOUND"}}]}`}, KindNotFound, 200, "NOT_FOUND", 0, nil},
		{"Could not find message", fault{body: `{"data":{"app":null},"errors":[{"message":"Could not find App","path":["app"]}]}`}, KindNotFound, 200, "", 0, []string{"Could not find App", "[path app]"}},
		{"code INVALID", fault{body: `{"errors":[{"message":"bad","extensions":{"code":"INVALID"}}]}`}, KindInvalid, 200, "INVALID", 0, nil},
		{"code UNPROCESSABLE", fault{body: `{"errors":[{"message":"bad","extensions":{"code":"UNPROCESSABLE"}}]}`}, KindInvalid, 200, "UNPROCESSABLE", 0, nil},
		{"code INVALID_ARGUMENTS", fault{body: `{"errors":[{"message":"bad","extensions":{"code":"INVALID_ARGUMENTS"}}]}`}, KindInvalid, 200, "INVALID_ARGUMENTS", 0, nil},
		{"duplicate name taken", fault{body: `{"errors":[{"message":"Name has already been taken"}]}`}, KindConflict, 200, "", 0, nil},
		{"duplicate name with UNPROCESSABLE", fault{body: `{"errors":[{"message":"Name has already been taken","extensions":{"code":"UNPROCESSABLE"}}]}`}, KindConflict, 200, "UNPROCESSABLE", 0, nil},
		{"duplicate name exists", fault{body: `{"errors":[{"message":"peer k8s-a already exists"}]}`}, KindConflict, 200, "", 0, nil},
		{"429 retry-after seconds", fault{status: 429, headers: map[string]string{"Retry-After": "7"}}, KindRateLimited, 429, "", 7 * time.Second, []string{"rate limit", "retry after 7s"}},
		{"429 retry-after date", fault{status: 429, headers: map[string]string{"Retry-After": time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)}}, KindRateLimited, 429, "", -1, nil},
		{"502 html page", fault{status: 502, headers: map[string]string{"Content-Type": "text/html"}, body: "<html><body>Bad Gateway</body></html>"}, KindTransient, 502, "", 0, []string{"Fly API unavailable (HTTP 502)", "text/html"}},
		{"503", fault{status: 503}, KindTransient, 503, "", 0, []string{"Fly API unavailable (HTTP 503)", "retry later"}},
		{"500", fault{status: 500, body: "oops"}, KindTransient, 500, "", 0, nil},
		{"MAINTENANCE", fault{body: `{"errors":[{"message":"down for maintenance","extensions":{"code":"MAINTENANCE"}}]}`}, KindTransient, 200, "MAINTENANCE", 0, nil},
		{"SERVICE_UNAVAILABLE", fault{body: `{"errors":[{"message":"x","extensions":{"code":"SERVICE_UNAVAILABLE"}}]}`}, KindTransient, 200, "SERVICE_UNAVAILABLE", 0, nil},
		{"200 not json", fault{body: "<html>hello</html>"}, KindTransient, 200, "", 0, []string{"not a JSON object"}},
		{"200 truncated json", fault{body: `{"data":{"nearestRegion":`}, KindTransient, 200, "", 0, []string{"not valid JSON"}},
		{"errors not an array", fault{body: `{"errors":"boom"}`}, KindTransient, 200, "", 0, []string{"not an array"}},
		{"huge body", fault{body: huge}, KindUnknown, 200, "", 0, []string{"larger than"}},
		{"neither data nor errors", fault{body: `{}`}, KindUnknown, 200, "", 0, []string{"neither data nor errors"}},
		{"404 wrong base url", fault{status: 404, body: "not found"}, KindUnknown, 404, "", 0, []string{"FLY_API_BASE_URL"}},
		{"unknown graphql error, path with index", fault{body: `{"errors":[{"message":"weird","path":["a",0,"b"],"extensions":{"code":"SOMETHING"}},{"message":"second"}]}`}, KindUnknown, 200, "SOMETHING", 0, []string{"weird", "[path a.0.b]", "and 1 more errors"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFly(t)
			c := f.client(t, func(o *Options) { o.MaxRetries = -1 })
			f.inject("nearestRegion", tt.flt)
			_, err := c.NearestGatewayRegion(context.Background())
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			if e.Kind != tt.kind || e.HTTPStatus != tt.status || e.Code != tt.code {
				t.Fatalf("got kind %v status %d code %q, want %v %d %q (%v)", e.Kind, e.HTTPStatus, e.Code, tt.kind, tt.status, tt.code, err)
			}
			if e.Op != OpNearestRegion || !strings.HasPrefix(err.Error(), OpNearestRegion+": ") {
				t.Fatalf("op not named: %v", err)
			}
			switch {
			case tt.retryAfter > 0 && e.RetryAfter != tt.retryAfter:
				t.Fatalf("RetryAfter = %v, want %v", e.RetryAfter, tt.retryAfter)
			case tt.retryAfter < 0 && (e.RetryAfter < 80*time.Second || e.RetryAfter > 91*time.Second):
				t.Fatalf("RetryAfter from date = %v", e.RetryAfter)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Fatalf("error %q does not contain %q", err, s)
				}
			}
			preds := map[ErrorKind]func(error) bool{KindUnauthorized: IsUnauthorized, KindNotFound: IsNotFound, KindInvalid: IsInvalid,
				KindConflict: IsConflict, KindRateLimited: IsRateLimited, KindTransient: IsTransient}
			for k, p := range preds {
				if p(err) != (k == tt.kind) {
					t.Fatalf("predicate for %v = %v on %v", k, p(err), err)
				}
				if p(fmt.Errorf("wrapped: %w", err)) != (k == tt.kind) {
					t.Fatalf("predicate for %v fails through wrapping", k)
				}
			}
			if strings.Contains(err.Error(), "fm2_") {
				t.Fatalf("error leaks the token: %v", err)
			}
		})
	}
}

func TestErrorKindString(t *testing.T) {
	want := map[ErrorKind]string{KindUnknown: "unknown", KindUnauthorized: "unauthorized", KindNotFound: "not found", KindInvalid: "invalid",
		KindConflict: "conflict", KindRateLimited: "rate limited", KindTransient: "transient", ErrorKind(99): "kind(99)"}
	for k, s := range want {
		if k.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(k), k.String(), s)
		}
	}
	if IsNotFound(errors.New("x")) || IsNotFound(nil) {
		t.Error("plain errors are not *Error")
	}
	inner := errors.New("inner")
	if e := (&Error{Err: inner}); !errors.Is(e, inner) {
		t.Error("Unwrap")
	}
}

func TestServerMessageScrubbed(t *testing.T) {
	f := newFakeFly(t)
	c := f.client(t, func(o *Options) { o.MaxRetries = -1 })
	f.inject("nearestRegion", fault{body: `{"errors":[{"message":"bad token fm2_c2VjcmV0LXBlcm1pc3Npb24= given"}]}`})
	_, err := c.NearestGatewayRegion(context.Background())
	if err == nil || strings.Contains(err.Error(), "c2VjcmV0LXBlcm1pc3Npb24") || !strings.Contains(err.Error(), redacted) {
		t.Fatalf("not scrubbed: %v", err)
	}
}

func TestRetries(t *testing.T) {
	ctx := context.Background()
	t.Run("transient then success", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.inject("nearestRegion", fault{status: 502}, fault{status: 503})
		if code, err := c.NearestGatewayRegion(ctx); err != nil || code != "ord" {
			t.Fatalf("%q %v", code, err)
		}
		if n := f.count("nearestRegion"); n != 3 {
			t.Fatalf("%d attempts, want 3", n)
		}
	})
	t.Run("gives up after MaxRetries", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t, func(o *Options) { o.MaxRetries = 2 })
		sleeps := recordSleeps(c)
		f.inject("nearestRegion", fault{status: 502}, fault{status: 502}, fault{status: 502}, fault{status: 502})
		_, err := c.NearestGatewayRegion(ctx)
		if !IsTransient(err) {
			t.Fatalf("err = %v", err)
		}
		if n := f.count("nearestRegion"); n != 3 {
			t.Fatalf("%d attempts, want 3", n)
		}
		if len(*sleeps) != 2 {
			t.Fatalf("%d sleeps", len(*sleeps))
		}
		for _, d := range *sleeps {
			if d < 0 || d > 5*time.Millisecond {
				t.Fatalf("delay %v outside [0, RetryMaxDelay]", d)
			}
		}
	})
	t.Run("negative MaxRetries means one attempt", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t, func(o *Options) { o.MaxRetries = -1 })
		f.inject("nearestRegion", fault{status: 503})
		if _, err := c.NearestGatewayRegion(ctx); !IsTransient(err) || f.count("nearestRegion") != 1 {
			t.Fatalf("err %v after %d attempts", err, f.count("nearestRegion"))
		}
	})
	t.Run("not retried: unauthorized, not found, invalid", func(t *testing.T) {
		for _, flt := range []fault{{status: 401}, {body: `{"errors":[{"message":"Could not find X"}]}`}, {body: `{"errors":[{"message":"x","extensions":{"code":"INVALID"}}]}`}} {
			f := newFakeFly(t)
			c := f.client(t)
			f.inject("nearestRegion", flt)
			if _, err := c.NearestGatewayRegion(ctx); err == nil || f.count("nearestRegion") != 1 {
				t.Fatalf("%v retried: %d attempts", err, f.count("nearestRegion"))
			}
		}
	})
	t.Run("Retry-After honoured", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		sleeps := recordSleeps(c)
		f.inject("nearestRegion", fault{status: 429, headers: map[string]string{"Retry-After": "2"}})
		if _, err := c.NearestGatewayRegion(ctx); err != nil {
			t.Fatal(err)
		}
		if len(*sleeps) != 1 || (*sleeps)[0] != 2*time.Second {
			t.Fatalf("sleeps %v, want [2s]", *sleeps)
		}
	})
	t.Run("Retry-After beyond the deadline returns at once", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.inject("nearestRegion", fault{status: 429, headers: map[string]string{"Retry-After": "30"}})
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err := c.NearestGatewayRegion(cctx)
		if !IsRateLimited(err) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
			t.Fatalf("err %v after %v", err, time.Since(start))
		}
		if f.count("nearestRegion") != 1 {
			t.Fatal("retried")
		}
	})
	t.Run("Retry-After over a minute is not waited for", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.inject("nearestRegion", fault{status: 429, headers: map[string]string{"Retry-After": "3600"}})
		if _, err := c.NearestGatewayRegion(ctx); !IsRateLimited(err) || f.count("nearestRegion") != 1 {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("context deadline stops the retries", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t, func(o *Options) {
			o.MaxRetries = 1000
			o.RetryBaseDelay, o.RetryMaxDelay = 20*time.Millisecond, 40*time.Millisecond
		})
		for i := 0; i < 1000; i++ {
			f.inject("nearestRegion", fault{status: 503})
		}
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.NearestGatewayRegion(cctx)
		if !errors.Is(err, context.DeadlineExceeded) || !IsTransient(err) {
			t.Fatalf("err = %v", err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("took %v", el)
		}
		if n := f.count("nearestRegion"); n < 2 || n > 100 {
			t.Fatalf("%d attempts", n)
		}
	})
	t.Run("hanging server bounded by ctx", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.inject("nearestRegion", fault{hang: true})
		cctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.NearestGatewayRegion(cctx)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
			t.Fatalf("err %v after %v", err, time.Since(start))
		}
	})
	t.Run("cancelled context sends nothing", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.NearestGatewayRegion(cctx); !errors.Is(err, context.Canceled) || f.count("nearestRegion") != 0 {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("connection refused is retried", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		c, err := New(Options{BaseURL: url, Token: "x", RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond, MaxRetries: 2})
		if err != nil {
			t.Fatal(err)
		}
		sleeps := recordSleeps(c)
		_, err = c.NearestGatewayRegion(ctx)
		if !IsTransient(err) || len(*sleeps) != 2 {
			t.Fatalf("err %v sleeps %v", err, *sleeps)
		}
	})
}

func TestBackoffBounds(t *testing.T) {
	c, _ := New(Options{Token: "x", RetryBaseDelay: 100 * time.Millisecond, RetryMaxDelay: 2 * time.Second})
	for attempt := 1; attempt < 80; attempt++ {
		window := min(100*time.Millisecond<<min(attempt-1, 20), 2*time.Second)
		for i := 0; i < 20; i++ {
			if d := c.backoff(attempt, 0); d < 0 || d > window {
				t.Fatalf("attempt %d: delay %v outside [0,%v]", attempt, d, window)
			}
		}
	}
	if d := c.backoff(1, 5*time.Second); d != 5*time.Second {
		t.Fatalf("Retry-After not honoured: %v", d)
	}
}

func TestListPeersPagination(t *testing.T) {
	f := newFakeFly(t)
	f.pageSize = 7
	for i := 0; i < 23; i++ {
		f.addPeerState(fmt.Sprintf("peer-%02d", i), testGWKey)
	}
	f.nilNodes = true
	c := f.client(t)
	peers, err := c.ListPeers(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 23 {
		t.Fatalf("%d peers, want 23", len(peers))
	}
	for i, p := range peers {
		if p.Name != fmt.Sprintf("peer-%02d", i) || p.PublicKey != testGWKey || p.PeerIP == "" || p.Region != "ord" || p.ID == "" {
			t.Fatalf("peer %d = %+v", i, p)
		}
	}
	if n := f.count("listPeers"); n != 4 {
		t.Fatalf("%d pages, want 4", n)
	}
	reqs := f.recorded()
	if reqs[0].Variables["after"] != nil || reqs[0].Variables["first"] != float64(ListPageSize) {
		t.Fatalf("first page vars %v", reqs[0].Variables)
	}
	if reqs[1].Variables["after"] != "c7" || reqs[3].Variables["after"] != "c21" {
		t.Fatalf("cursors %v %v", reqs[1].Variables, reqs[3].Variables)
	}
	if !strings.Contains(reqs[0].Query, "pageInfo { hasNextPage endCursor }") {
		t.Fatalf("query %q", reqs[0].Query)
	}
}

func TestListPeersBadPaging(t *testing.T) {
	t.Run("looping cursor", func(t *testing.T) {
		f := newFakeFly(t)
		f.addPeerState("a", testGWKey)
		f.loop = true
		c := f.client(t)
		_, err := c.ListPeers(context.Background(), "acme")
		if err == nil || !strings.Contains(err.Error(), "repeated") || !strings.Contains(err.Error(), "endCursor") {
			t.Fatalf("err = %v", err)
		}
		if n := f.count("listPeers"); n != 2 {
			t.Fatalf("%d pages fetched", n)
		}
	})
	t.Run("hasNextPage without cursor", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.inject("listPeers", fault{body: `{"data":{"organization":{"wireGuardPeers":{"nodes":[],"pageInfo":{"hasNextPage":true,"endCursor":null}}}}}`})
		if _, err := c.ListPeers(context.Background(), "acme"); err == nil || !strings.Contains(err.Error(), "endCursor") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("no pageInfo means one page", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.inject("listPeers", fault{body: `{"data":{"organization":{"wireGuardPeers":{"nodes":[null,{"name":"x","pubkey":"k"}]}}}}`})
		peers, err := c.ListPeers(context.Background(), "acme")
		if err != nil || len(peers) != 1 || peers[0].Name != "x" {
			t.Fatalf("%v %v", peers, err)
		}
	})
	t.Run("unknown org", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		if _, err := c.ListPeers(context.Background(), "other"); !IsNotFound(err) || !strings.Contains(err.Error(), `"other"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("wrong types", func(t *testing.T) {
		f := newFakeFly(t)
		c := f.client(t)
		f.inject("listPeers", fault{body: `{"data":{"organization":{"wireGuardPeers":{"nodes":[{"name":7}]}}}}`})
		if _, err := c.ListPeers(context.Background(), "acme"); err == nil || !strings.Contains(err.Error(), "name") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("transient page is retried", func(t *testing.T) {
		f := newFakeFly(t)
		f.pageSize = 1
		f.addPeerState("a", testGWKey)
		f.addPeerState("b", testGWKey)
		c := f.client(t)
		f.inject("listPeers", fault{apply: true, status: 502})
		peers, err := c.ListPeers(context.Background(), "acme")
		if err != nil || len(peers) != 2 {
			t.Fatalf("%v %v", peers, err)
		}
	})
}

func TestLogsHaveNoSecrets(t *testing.T) {
	var logged strings.Builder
	log := funcr.New(func(prefix, args string) { logged.WriteString(prefix + " " + args + "\n") }, funcr.Options{Verbosity: 9})
	f := newFakeFly(t)
	c := f.client(t, func(o *Options) { o.Logger = log })
	kp, err := wgquick.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	f.inject("addWireGuardPeer", fault{apply: true, status: 502})
	f.inject("getPeer", fault{status: 503})
	created, err := c.AddPeer(context.Background(), AddPeerInput{Org: f.orgs["acme"], Name: "k8s-log", PublicKey: kp.Public})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewWireGuardConfig(kp.Private, *created, 0); err != nil {
		t.Fatal(err)
	}
	out := logged.String()
	if !strings.Contains(out, `"op"="add wireguard peer"`) || !strings.Contains(out, `"attempt"`) || !strings.Contains(out, `"delay"`) {
		t.Fatalf("expected retry logs with op/attempt/delay, got:\n%s", out)
	}
	for _, seg := range []string{"fm2_c2VjcmV0", "c2VjcmV0LXBlcm1pc3Npb24", kp.Private.String(), kp.Private.Hex()} {
		if strings.Contains(out, seg) {
			t.Fatalf("log contains a secret %q:\n%s", seg, out)
		}
	}
}

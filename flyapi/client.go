package flyapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/glaceon/glaceon/flyapi/target"
	"github.com/glaceon/glaceon/flyapi/version"
	"github.com/glaceon/glaceon/flyapi/wgquick"
)

// DefaultBaseURL is the Fly API base; requests go to BaseURL + "/graphql".
const DefaultBaseURL = "https://api.fly.io"

// Environment variables read by OptionsFromEnv.
const (
	EnvAPIToken    = "FLY_API_TOKEN"
	EnvAccessToken = "FLY_ACCESS_TOKEN"
	EnvBaseURL     = "FLY_API_BASE_URL"
	EnvGatewayPort = "FLY_WG_GATEWAY_PORT"
)

// Defaults for Options.
const (
	DefaultMaxRetries     = 3
	DefaultRetryBaseDelay = 100 * time.Millisecond
	DefaultRetryMaxDelay  = 2 * time.Second
	// DefaultHTTPTimeout bounds one HTTP exchange when Options.HTTPClient is
	// nil. Each call is also bounded by its context.
	DefaultHTTPTimeout = 30 * time.Second
	// MaxResponseSize bounds a response body.
	MaxResponseSize = 4 << 20
	// maxRetryAfter: a longer Retry-After is not waited for; the
	// RateLimited error is returned at once.
	maxRetryAfter = time.Minute
)

// Options configure a Client. The zero value (plus a Token) talks to the real
// Fly API with sensible defaults. Formatting Options with fmt never prints the
// token.
type Options struct {
	// BaseURL defaults to https://api.fly.io; requests go to BaseURL+"/graphql".
	BaseURL string
	// Token is the raw token as the user has it ("FlyV1 fm2_...", "fo1_...",
	// with or without scheme); it is normalised by NormalizeToken. Ignored
	// when Tokens is set.
	Token string
	// TokenSource says where the token came from (e.g. "FLY_API_TOKEN"), for
	// error messages. Never the token itself. Ignored when Tokens is set.
	TokenSource string
	// Tokens, if set, supplies the token for every request instead of
	// Token, so that a rotated token is used without a new Client (e.g. a
	// *TokenHolder fed from a Secret). New does not require it to hold a
	// token yet: requests fail with KindUnauthorized until it does.
	Tokens TokenProvider
	// Org names what this client serves (the FlyOrg: one client per org),
	// the "org" label of its metrics and a key of its logs. Optional.
	Org string
	// Metrics receives the glaceon_fly_api_* series; nil means
	// DefaultMetrics.
	Metrics *Metrics
	// OrgCacheTTL is how long CachedOrganization keeps a lookup: 0 means
	// DefaultOrgCacheTTL, negative disables the cache.
	OrgCacheTTL time.Duration
	// UserAgent defaults to "glaceon/" + version.Version.
	UserAgent string
	// HTTPClient defaults to a client with a 30s timeout that does not follow
	// redirects.
	HTTPClient *http.Client
	// Logger receives retry and request logs (never tokens or keys).
	Logger logr.Logger
	// MaxRetries: 0 means DefaultMaxRetries, negative means no retries.
	MaxRetries int
	// RetryBaseDelay and RetryMaxDelay bound the exponential backoff with
	// full jitter; 0 means the defaults (100ms, 2s).
	RetryBaseDelay, RetryMaxDelay time.Duration
	// GatewayPort is not sent anywhere: it is carried for NewWireGuardConfig
	// users (FLY_WG_GATEWAY_PORT). 0 means wgquick.DefaultGatewayPort.
	GatewayPort int
}

// String describes the options with the token redacted.
func (o Options) String() string {
	tok := "<none>"
	if o.Token != "" {
		tok = redacted
	}
	if o.Tokens != nil {
		tok = "<provider>"
	}
	return fmt.Sprintf("{BaseURL:%s Token:%s TokenSource:%s Org:%s UserAgent:%s MaxRetries:%d RetryBaseDelay:%s RetryMaxDelay:%s GatewayPort:%d}",
		o.BaseURL, tok, o.TokenSource, o.Org, o.UserAgent, o.MaxRetries, o.RetryBaseDelay, o.RetryMaxDelay, o.GatewayPort)
}

// GoString is String with a type name.
func (o Options) GoString() string { return "flyapi.Options" + o.String() }

// Format implements fmt.Formatter so no verb prints the token.
func (o Options) Format(f fmt.State, verb rune) { formatRedacted(f, verb, o.String(), o.GoString()) }

// redacted replaces a secret in printed values.
const redacted = "<redacted>"

func formatRedacted(f fmt.State, verb rune, s, gs string) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, gs)
		return
	}
	_, _ = io.WriteString(f, s)
}

// OptionsFromEnv reads FLY_API_TOKEN (else FLY_ACCESS_TOKEN), FLY_API_BASE_URL
// and FLY_WG_GATEWAY_PORT. Empty variables count as unset.
func OptionsFromEnv() (Options, error) {
	return optionsFromEnv(os.Getenv)
}

func optionsFromEnv(getenv func(string) string) (Options, error) {
	var o Options
	for _, name := range []string{EnvAPIToken, EnvAccessToken} {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			o.Token, o.TokenSource = v, name
			break
		}
	}
	if o.Token == "" {
		return o, fmt.Errorf("no Fly API token: set %s (or %s) to a token from `fly tokens create wireguard` or `fly tokens create org`", EnvAPIToken, EnvAccessToken)
	}
	if _, err := NormalizeToken(o.Token); err != nil {
		return o, fmt.Errorf("invalid Fly API token in %s: %w", o.TokenSource, err)
	}
	if v := strings.TrimSpace(getenv(EnvBaseURL)); v != "" {
		if _, err := parseBaseURL(v); err != nil {
			return o, fmt.Errorf("invalid %s: %w", EnvBaseURL, err)
		}
		o.BaseURL = v
	}
	if v := strings.TrimSpace(getenv(EnvGatewayPort)); v != "" {
		n, err := target.ParsePort(v)
		if err != nil {
			return o, fmt.Errorf("invalid %s %q: use a UDP port number in 1..65535 (default %d)", EnvGatewayPort, target.Shorten(v), wgquick.DefaultGatewayPort)
		}
		o.GatewayPort = int(n)
	}
	return o, nil
}

// Client talks to the Fly GraphQL API. It is safe for concurrent use.
// Formatting a Client never prints the token.
type Client struct {
	endpoint    string
	tokens      TokenProvider
	auth        atomic.Pointer[authState] // the last token seen, normalised
	org         string
	metrics     *Metrics
	orgs        *orgCache
	userAgent   string
	hc          *http.Client
	log         logr.Logger
	maxRetries  int
	baseDelay   time.Duration
	maxDelay    time.Duration
	gatewayPort int

	// sleep waits for d or until ctx is done; replaced in tests.
	sleep func(ctx context.Context, d time.Duration) error
}

// New validates opts and returns a Client.
func New(opts Options) (*Client, error) {
	tokens := opts.Tokens
	var first *authState
	if tokens == nil {
		auth, err := NormalizeToken(opts.Token)
		if err != nil {
			if opts.TokenSource != "" {
				return nil, fmt.Errorf("flyapi: token from %s: %w", opts.TokenSource, err)
			}
			return nil, fmt.Errorf("flyapi: %w", err)
		}
		tokens = &staticToken{token: opts.Token, source: opts.TokenSource}
		first = &authState{raw: opts.Token, header: auth, secrets: tokenSegments(auth), source: opts.TokenSource}
	}
	if strings.ContainsFunc(opts.Org, func(r rune) bool { return r < 0x20 || r == 0x7f }) || len(opts.Org) > 253 {
		return nil, errors.New("flyapi: Org must be a short name without control characters")
	}
	base := opts.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := parseBaseURL(base)
	if err != nil {
		return nil, fmt.Errorf("flyapi: base URL: %w", err)
	}
	ua := opts.UserAgent
	if ua == "" {
		ua = "glaceon/" + version.Version
	}
	if strings.ContainsFunc(ua, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return nil, errors.New("flyapi: user agent contains control characters")
	}
	if opts.GatewayPort < 0 || opts.GatewayPort > 65535 {
		return nil, fmt.Errorf("flyapi: gateway port %d out of range: use 1..65535 (0 for %d)", opts.GatewayPort, wgquick.DefaultGatewayPort)
	}
	c := &Client{
		endpoint:    u + "/graphql",
		tokens:      tokens,
		org:         opts.Org,
		metrics:     opts.Metrics,
		userAgent:   ua,
		hc:          opts.HTTPClient,
		log:         opts.Logger,
		maxRetries:  opts.MaxRetries,
		baseDelay:   opts.RetryBaseDelay,
		maxDelay:    opts.RetryMaxDelay,
		gatewayPort: opts.GatewayPort,
		sleep:       sleepCtx,
	}
	c.auth.Store(first)
	if c.metrics == nil {
		c.metrics = DefaultMetrics
	}
	ttl := opts.OrgCacheTTL
	if ttl == 0 {
		ttl = DefaultOrgCacheTTL
	}
	c.orgs = newOrgCache(ttl)
	if c.log.GetSink() != nil && c.org != "" {
		c.log = c.log.WithValues("org", c.org)
	}
	if c.hc == nil {
		c.hc = &http.Client{
			Timeout: DefaultHTTPTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	switch {
	case c.maxRetries == 0:
		c.maxRetries = DefaultMaxRetries
	case c.maxRetries < 0:
		c.maxRetries = 0
	}
	if c.baseDelay <= 0 {
		c.baseDelay = DefaultRetryBaseDelay
	}
	if c.maxDelay <= 0 {
		c.maxDelay = DefaultRetryMaxDelay
	}
	if c.maxDelay < c.baseDelay {
		c.maxDelay = c.baseDelay
	}
	if c.gatewayPort == 0 {
		c.gatewayPort = wgquick.DefaultGatewayPort
	}
	return c, nil
}

// GatewayPort is Options.GatewayPort, or wgquick.DefaultGatewayPort.
func (c *Client) GatewayPort() int { return c.gatewayPort }

// Endpoint is the GraphQL URL requests go to.
func (c *Client) Endpoint() string { return c.endpoint }

// Org is Options.Org.
func (c *Client) Org() string { return c.org }

// String describes the client without its token.
func (c *Client) String() string {
	src := ""
	if st := c.auth.Load(); st != nil {
		src = st.source
	}
	return fmt.Sprintf("flyapi.Client{endpoint:%s org:%s token:%s tokenSource:%s}", c.endpoint, c.org, redacted, src)
}

// GoString is String.
func (c *Client) GoString() string { return c.String() }

// Format implements fmt.Formatter so no verb prints the token.
func (c *Client) Format(f fmt.State, verb rune) { formatRedacted(f, verb, c.String(), c.GoString()) }

func parseBaseURL(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("%q is not a URL: use e.g. %s", target.Shorten(s), DefaultBaseURL)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "", fmt.Errorf("%q must start with https:// (or http:// for a local test server)", target.Shorten(s))
	}
	if u.Host == "" {
		return "", fmt.Errorf("%q has no host: use e.g. %s", target.Shorten(s), DefaultBaseURL)
	}
	if u.User != nil {
		return "", errors.New("base URL must not contain credentials: pass the token through FLY_API_TOKEN")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q must not have a query or fragment: use e.g. %s", target.Shorten(u.Redacted()), DefaultBaseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String(), nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryMode says which failures a call may retry on its own.
type retryMode int

const (
	// retryAll: queries and idempotent mutations: retry rate limits and
	// transient failures.
	retryAll retryMode = iota
	// retrySafe: non-idempotent mutations: retry only failures where the
	// request certainly was not applied (429, connection refused, DNS,
	// maintenance). Ambiguous failures are returned to the caller, which
	// must reconcile.
	retrySafe
)

type gqlRequest struct {
	Query     string         `json:"query"`
	Variables map[string]any `json:"variables"`
}

// run sends one GraphQL document with retries and returns the "data" member.
func (c *Client) run(ctx context.Context, op, query string, vars map[string]any, mode retryMode) (data json.RawMessage, err error) {
	start := time.Now()
	defer func() { c.observeCall(op, start, err) }()
	return c.runRetrying(ctx, op, query, vars, mode)
}

func (c *Client) runRetrying(ctx context.Context, op, query string, vars map[string]any, mode retryMode) (json.RawMessage, error) {
	body, err := json.Marshal(gqlRequest{Query: query, Variables: vars})
	if err != nil {
		return nil, &Error{Op: op, Kind: KindInvalid, Message: "cannot encode request", Err: err}
	}
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, &Error{Op: op, Kind: KindTransient, summary: "not sent", Message: "context done before the request", Err: err}
		}
		data, apiErr := c.once(ctx, op, body, attempt)
		if apiErr == nil {
			return data, nil
		}
		if ctx.Err() != nil {
			return nil, ctxError(op, attempt, ctx.Err(), apiErr)
		}
		retryable := apiErr.Kind == KindRateLimited || apiErr.Kind == KindTransient
		if mode == retrySafe && apiErr.ambiguous {
			retryable = false
		}
		if !retryable || attempt > c.maxRetries {
			return nil, apiErr
		}
		if apiErr.RetryAfter > maxRetryAfter {
			return nil, apiErr
		}
		delay := c.backoff(attempt, apiErr.RetryAfter)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			return nil, fmt.Errorf("%s: giving up after %s: the context deadline is before the next attempt (in %s): %w: %w",
				op, plural(attempt, "attempt"), delay.Round(time.Millisecond), apiErr, context.DeadlineExceeded)
		}
		c.log.Info("retrying Fly API request", "op", op, "attempt", attempt, "delay", delay,
			"status", apiErr.HTTPStatus, "kind", apiErr.Kind.String(), "code", apiErr.Code)
		if err := c.sleep(ctx, delay); err != nil {
			return nil, ctxError(op, attempt, err, apiErr)
		}
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func ctxError(op string, attempts int, ctxErr error, last *Error) error {
	return fmt.Errorf("%s: gave up after %s: %w (last error: %w)", op, plural(attempts, "attempt"), ctxErr, last)
}

// backoff returns the delay before attempt+1: full jitter over an
// exponential window, or the server's Retry-After if that is longer.
func (c *Client) backoff(attempt int, retryAfter time.Duration) time.Duration {
	window := c.maxDelay
	if attempt-1 < 30 {
		if w := c.baseDelay << (attempt - 1); w > 0 && w < window {
			window = w
		}
	}
	d := time.Duration(rand.Int64N(int64(window) + 1))
	if retryAfter > d {
		d = retryAfter
	}
	return d
}

// once performs one HTTP exchange with the current token.
func (c *Client) once(ctx context.Context, op string, body []byte, attempt int) (json.RawMessage, *Error) {
	st, terr := c.currentAuth(ctx, op)
	if terr != nil {
		return nil, terr
	}
	data, apiErr := c.exchange(ctx, st, op, body, attempt)
	c.observeRequest(op, apiErr)
	return data, apiErr
}

func (c *Client) exchange(ctx context.Context, st *authState, op string, body []byte, attempt int) (json.RawMessage, *Error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, &Error{Op: op, Kind: KindInvalid, Message: "cannot build request", Err: err}
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Accept", "application/json; charset=utf-8")
	req.Header.Set("Authorization", st.header)
	req.Header.Set("User-Agent", c.userAgent)

	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		e := &Error{Op: op, Kind: KindTransient, summary: "request failed", Err: st.scrubErr(err), ambiguous: !notSent(err)}
		if ctx.Err() != nil {
			e.Err = ctx.Err()
		}
		c.log.V(1).Info("Fly API request failed", "op", op, "attempt", attempt, "duration", time.Since(start), "sent", e.ambiguous)
		return nil, e
	}
	defer resp.Body.Close()
	raw, readErr := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	c.log.V(1).Info("Fly API response", "op", op, "attempt", attempt, "status", resp.StatusCode, "duration", time.Since(start), "bytes", len(raw))
	if readErr != nil {
		if ctx.Err() != nil {
			readErr = ctx.Err()
		}
		return nil, &Error{Op: op, Kind: KindTransient, HTTPStatus: resp.StatusCode, summary: "reading the response failed", Err: readErr, ambiguous: true}
	}
	data, apiErr := decodeResponse(resp.StatusCode, resp.Header, raw)
	if apiErr != nil {
		apiErr.Op = op
		c.decorate(st, apiErr)
		return nil, apiErr
	}
	return data, nil
}

// notSent reports whether a transport error happened before the request
// could reach the server (so a mutation certainly was not applied).
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// scrubErr removes token segments from an error message, just in case.
func (st *authState) scrubErr(err error) error {
	msg := err.Error()
	if s := st.scrub(msg); s != msg {
		return errors.New(s)
	}
	return err
}

func (st *authState) scrub(s string) string {
	for _, sec := range st.secrets {
		s = strings.ReplaceAll(s, sec, redacted)
	}
	return s
}

// decorate scrubs secrets and adds the actionable hint for the kind.
func (c *Client) decorate(st *authState, e *Error) {
	e.Message = st.scrub(e.Message)
	switch e.Kind {
	case KindUnauthorized:
		src := "the configured token"
		set := "set FLY_API_TOKEN"
		if st.source != "" {
			src = "the token from " + st.source
			set = "set " + st.source
		}
		e.summary = "Fly API rejected " + src
		e.hint = "create one with `fly tokens create org` (or the least-privileged `fly tokens create wireguard`) and " + set
	case KindRateLimited:
		e.summary = "Fly API rate limit hit"
		e.hint = "retry later"
	case KindTransient:
		if e.HTTPStatus >= 500 {
			e.summary = "Fly API unavailable"
			e.hint = "retry later; see https://status.flyio.net"
		}
	case KindUnknown:
		if e.HTTPStatus == 404 || e.HTTPStatus/100 == 3 {
			e.hint = "check " + EnvBaseURL + " (requests go to " + c.endpoint + ")"
		}
	}
}

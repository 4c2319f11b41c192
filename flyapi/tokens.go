package flyapi

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// TokenProvider supplies the Fly API token for every request, so that a
// rotated token is used at once, without a new Client or a restart (e.g. a
// token read from a Kubernetes Secret and followed when it changes).
// FlyToken is called once per HTTP request: keep it cheap (no I/O).
type TokenProvider interface {
	// FlyToken returns the current raw token (any form NormalizeToken
	// accepts) and where it comes from (e.g. "secret glaceon-system/fly-api-token
	// key token"), for error messages: never the token itself. An error
	// means no usable token; the request is not sent.
	FlyToken(ctx context.Context) (token, source string, err error)
}

// TokenHolder is a TokenProvider whose token can be replaced while clients
// use it. The zero value holds no token: requests fail with a
// KindUnauthorized error without being sent. Safe for concurrent use;
// formatting it never prints the token.
type TokenHolder struct {
	mu     sync.RWMutex
	token  string
	source string
}

// NewTokenHolder returns a holder with a validated token.
func NewTokenHolder(token, source string) (*TokenHolder, error) {
	h := &TokenHolder{}
	if err := h.Set(token, source); err != nil {
		return nil, err
	}
	return h, nil
}

// Set replaces the token after checking it with NormalizeToken. A rejected
// token leaves the previous one in place and returns an error naming
// source.
func (h *TokenHolder) Set(token, source string) error {
	if _, err := NormalizeToken(token); err != nil {
		if source != "" {
			return fmt.Errorf("token from %s: %w", source, err)
		}
		return err
	}
	h.mu.Lock()
	h.token, h.source = token, source
	h.mu.Unlock()
	return nil
}

// FlyToken implements TokenProvider.
func (h *TokenHolder) FlyToken(context.Context) (string, string, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.token == "" {
		return "", h.source, errors.New("no Fly API token configured")
	}
	return h.token, h.source, nil
}

// String describes the holder without its token.
func (h *TokenHolder) String() string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	tok := "<none>"
	if h.token != "" {
		tok = redacted
	}
	return fmt.Sprintf("flyapi.TokenHolder{token:%s source:%s}", tok, h.source)
}

// GoString is String.
func (h *TokenHolder) GoString() string { return h.String() }

// Format implements fmt.Formatter so no verb prints the token.
func (h *TokenHolder) Format(f fmt.State, verb rune) {
	formatRedacted(f, verb, h.String(), h.GoString())
}

// staticToken is the provider behind Options.Token. Held by pointer, so a
// formatted Client shows an address, never the token.
type staticToken struct{ token, source string }

func (s *staticToken) FlyToken(context.Context) (string, string, error) {
	return s.token, s.source, nil
}

// authState is the normalised form of one raw token.
type authState struct {
	raw     string   // as the provider gave it: the cache key
	header  string   // full Authorization header value: never log it
	secrets []string // token segments, scrubbed from messages
	source  string
}

// currentAuth returns the header for the provider's current token,
// normalising it only when it changed. A changed token empties the
// organization cache: the next lookup proves the new token sees the org.
func (c *Client) currentAuth(ctx context.Context, op string) (*authState, *Error) {
	raw, source, err := c.tokens.FlyToken(ctx)
	if err != nil {
		e := &Error{Op: op, Kind: KindUnauthorized, summary: "no usable Fly API token", Message: err.Error()}
		if source != "" {
			e.Message += " (" + source + ")"
		}
		return nil, e
	}
	if st := c.auth.Load(); st != nil && st.raw == raw {
		if st.source != source {
			cp := *st
			cp.source = source
			c.auth.Store(&cp)
			return &cp, nil
		}
		return st, nil
	}
	header, nerr := NormalizeToken(raw)
	if nerr != nil {
		msg := nerr.Error()
		if source != "" {
			msg = "token from " + source + ": " + msg
		}
		return nil, &Error{Op: op, Kind: KindUnauthorized, summary: "invalid Fly API token", Message: msg}
	}
	st := &authState{raw: raw, header: header, secrets: tokenSegments(header), source: source}
	if old := c.auth.Swap(st); old != nil {
		c.log.Info("Fly API token changed; using the new one", "source", source)
		c.orgs.clear()
	}
	return st, nil
}

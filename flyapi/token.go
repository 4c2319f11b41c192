package flyapi

import (
	"errors"
	"strings"
)

// NormalizeToken turns a Fly token, as a user has it, into the full value of
// the Authorization header for the GraphQL API, following fly-go's
// Tokens.Parse + GraphQLHeader:
//
//  1. trim, then strip a leading "Bearer" or "FlyV1" scheme,
//     case-insensitively and repeatedly ("Bearer FlyV1 x" -> "x");
//  2. split on ',', trim each part and drop empty parts;
//  3. parts whose prefix before the first '_' is fm1r, fm1a or fm2 are
//     macaroons, everything else is a user token;
//  4. the result is "FlyV1 " + macaroons then user tokens, comma-joined, if
//     there is at least one macaroon, else "Bearer " + user tokens.
//
// An empty token, or one with control characters or spaces inside a segment,
// is an error. The error never contains the token.
func NormalizeToken(raw string) (string, error) {
	tok := stripAuthorizationScheme(raw)
	if strings.EqualFold(tok, "Bearer") || strings.EqualFold(tok, "FlyV1") {
		tok = "" // a scheme with no token
	}
	var macaroons, users []string
	for _, part := range strings.Split(tok, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		for i := 0; i < len(part); i++ {
			ch := part[i]
			if ch < 0x20 || ch == 0x7f {
				return "", errors.New("token contains a control character (a stray newline from a file or Secret?): remove it")
			}
			if ch == ' ' {
				return "", errors.New("token contains a space inside a segment: pass the token exactly as `fly tokens create` printed it")
			}
		}
		if strings.EqualFold(part, "Bearer") || strings.EqualFold(part, "FlyV1") {
			return "", errors.New("token has a bare Bearer/FlyV1 scheme word between commas: pass the token exactly as `fly tokens create` printed it")
		}
		pfx, _, _ := strings.Cut(part, "_")
		switch pfx {
		case "fm1r", "fm1a", "fm2":
			macaroons = append(macaroons, part)
		default:
			users = append(users, part)
		}
	}
	if len(macaroons) == 0 && len(users) == 0 {
		return "", errors.New("token is empty: create one with `fly tokens create wireguard` (or `fly tokens create org`)")
	}
	scheme := "Bearer "
	if len(macaroons) > 0 {
		scheme = "FlyV1 "
	}
	return scheme + strings.Join(append(macaroons, users...), ","), nil
}

// stripAuthorizationScheme removes leading "Bearer"/"FlyV1" schemes,
// case-insensitively and repeatedly. A scheme is followed by a space or tab.
func stripAuthorizationScheme(tok string) string {
	for {
		tok = strings.TrimSpace(tok)
		i := strings.IndexAny(tok, " \t")
		if i < 0 {
			return tok
		}
		pfx := tok[:i]
		if !strings.EqualFold(pfx, "Bearer") && !strings.EqualFold(pfx, "FlyV1") {
			return tok
		}
		tok = tok[i+1:]
	}
}

// tokenSegments returns the individual token parts, used to scrub them from
// server messages.
func tokenSegments(header string) []string {
	_, rest, _ := strings.Cut(header, " ")
	var out []string
	for _, p := range strings.Split(rest, ",") {
		if len(p) >= 8 {
			out = append(out, p)
		}
	}
	return out
}

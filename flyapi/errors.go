package flyapi

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrorKind classifies a failed Fly API call so that callers can decide what
// to do (deny, retry later, tell the user to fix the token, ...).
type ErrorKind int

const (
	// KindUnknown is anything not covered below (unexpected HTTP status,
	// malformed response, ...).
	KindUnknown ErrorKind = iota
	// KindUnauthorized: HTTP 401/403 or GraphQL code UNAUTHORIZED. The token
	// is missing, wrong, expired or lacks the permission for the operation.
	KindUnauthorized
	// KindNotFound: GraphQL code NOT_FOUND, a "Could not find ..." message or
	// a null object (organization: null).
	KindNotFound
	// KindInvalid: the API rejected the input (INVALID, UNPROCESSABLE,
	// INVALID_ARGUMENTS), or the client refused to send an invalid input.
	KindInvalid
	// KindConflict: a peer with that name already exists.
	KindConflict
	// KindRateLimited: HTTP 429. RetryAfter carries the server's hint.
	KindRateLimited
	// KindTransient: 5xx, network errors, MAINTENANCE, SERVICE_UNAVAILABLE.
	// Worth retrying later.
	KindTransient
)

// String returns the kind in lower-case words ("not found").
func (k ErrorKind) String() string {
	switch k {
	case KindUnknown:
		return "unknown"
	case KindUnauthorized:
		return "unauthorized"
	case KindNotFound:
		return "not found"
	case KindInvalid:
		return "invalid"
	case KindConflict:
		return "conflict"
	case KindRateLimited:
		return "rate limited"
	case KindTransient:
		return "transient"
	default:
		return "kind(" + strconv.Itoa(int(k)) + ")"
	}
}

// Error is the error type returned by every Client method for failures
// reported by (or expected from) the Fly API. It never contains a token or a
// private key.
type Error struct {
	// Op is the operation in lower-case words, e.g. "add wireguard peer".
	Op string
	// Kind classifies the failure.
	Kind ErrorKind
	// HTTPStatus is the HTTP status code, 0 if the failure was not an HTTP
	// response (network error, invalid input, malformed data).
	HTTPStatus int
	// Code is the GraphQL extensions.code of the first error, if any.
	Code string
	// Message is the GraphQL message of the first error, or a description
	// of the problem found by the client.
	Message string
	// Path is the GraphQL path of the first error (strings and ints).
	Path []any
	// RetryAfter is the server's Retry-After hint (429/503), 0 if none.
	RetryAfter time.Duration
	// Err is the underlying error (network error, decode error), if any.
	Err error
	// Object is, for KindNotFound, what is missing: ObjectOrganization,
	// ObjectWireGuardPeer, or "" when the API did not say. Callers that
	// treat "not found" as "already done" must check it (IsPeerNotFound):
	// a missing organization is never a removed peer.
	Object string

	// summary replaces the kind in the message when set, e.g. "Fly API
	// rejected the token from FLY_API_TOKEN".
	summary string
	// hint is the actionable advice appended to the message.
	hint string
	// ambiguous: the request may have been applied by the server (a
	// mutation must be reconciled before it is retried).
	ambiguous bool
	// extra is the number of further GraphQL errors not shown.
	extra int
}

// Error renders "<op>: <kind> (HTTP n): <message> [code X]: <hint>: <cause>".
func (e *Error) Error() string {
	var b strings.Builder
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	if e.summary != "" {
		b.WriteString(e.summary)
	} else {
		b.WriteString(e.Kind.String())
	}
	if e.HTTPStatus != 0 && e.HTTPStatus != 200 {
		fmt.Fprintf(&b, " (HTTP %d)", e.HTTPStatus)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " [code %s]", e.Code)
	}
	if len(e.Path) > 0 {
		b.WriteString(" [path ")
		for i, p := range e.Path {
			if i > 0 {
				b.WriteByte('.')
			}
			fmt.Fprint(&b, p)
		}
		b.WriteString("]")
	}
	if e.extra > 0 {
		fmt.Fprintf(&b, " (and %d more errors)", e.extra)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.hint != "" {
		b.WriteString(": ")
		b.WriteString(e.hint)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

func kindOf(err error) (ErrorKind, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind, true
	}
	return KindUnknown, false
}

func isKind(err error, k ErrorKind) bool {
	got, ok := kindOf(err)
	return ok && got == k
}

// IsUnauthorized reports whether err (or an error it wraps) is a *Error of
// kind KindUnauthorized.
func IsUnauthorized(err error) bool { return isKind(err, KindUnauthorized) }

// IsNotFound reports whether err is a *Error of kind KindNotFound, whatever
// is missing. Use IsPeerNotFound or IsOrgNotFound to tell which.
func IsNotFound(err error) bool { return isKind(err, KindNotFound) }

// Objects a KindNotFound error may name (Error.Object), as the API spells
// them in "Could not find <Object>".
const (
	ObjectOrganization  = "Organization"
	ObjectWireGuardPeer = "WireGuardPeer"
)

// IsPeerNotFound reports whether err says that the WireGuard peer does not
// exist (and only that: the organization was found). For a removal this
// means "already removed".
func IsPeerNotFound(err error) bool { return notFoundObject(err) == ObjectWireGuardPeer }

// IsOrgNotFound reports whether err says that the organization does not
// exist or the token cannot see it. Never "already removed".
func IsOrgNotFound(err error) bool { return notFoundObject(err) == ObjectOrganization }

func notFoundObject(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Kind == KindNotFound {
		return e.Object
	}
	return ""
}

// notFoundObjectOf reads what a not-found GraphQL error names: the
// "Could not find <Type>" wording of the API (docs/fly-api.md, "Transport"), else the
// last field of its path. "" when neither says.
func notFoundObjectOf(message string, path []any) string {
	m := strings.ToLower(strings.TrimSpace(message))
	switch {
	case strings.HasPrefix(m, "could not find wireguardpeer"), strings.HasPrefix(m, "could not find wire guard peer"):
		return ObjectWireGuardPeer
	case strings.HasPrefix(m, "could not find organization"):
		return ObjectOrganization
	}
	if len(path) > 0 {
		switch last, _ := path[len(path)-1].(string); last {
		case "wireGuardPeer":
			return ObjectWireGuardPeer
		case "organization":
			return ObjectOrganization
		}
	}
	return ""
}

// IsInvalid reports whether err is a *Error of kind KindInvalid.
func IsInvalid(err error) bool { return isKind(err, KindInvalid) }

// IsConflict reports whether err is a *Error of kind KindConflict.
func IsConflict(err error) bool { return isKind(err, KindConflict) }

// IsRateLimited reports whether err is a *Error of kind KindRateLimited.
func IsRateLimited(err error) bool { return isKind(err, KindRateLimited) }

// IsTransient reports whether err is a *Error of kind KindTransient.
func IsTransient(err error) bool { return isKind(err, KindTransient) }

// IsRetryable reports whether a later attempt may succeed: rate limited or
// transient.
func IsRetryable(err error) bool {
	k, ok := kindOf(err)
	return ok && (k == KindRateLimited || k == KindTransient)
}

// classifyGraphQL maps a GraphQL error code and message to a kind. A
// duplicate-name message wins over a validation code (the API reports a taken
// name as UNPROCESSABLE "Name has already been taken").
func classifyGraphQL(code, message string) ErrorKind {
	m := strings.ToLower(strings.TrimSpace(message))
	byCode := KindUnknown
	switch strings.ToUpper(strings.TrimSpace(code)) {
	case "UNAUTHORIZED", "UNAUTHENTICATED", "FORBIDDEN":
		byCode = KindUnauthorized
	case "NOT_FOUND":
		byCode = KindNotFound
	case "INVALID", "UNPROCESSABLE", "INVALID_ARGUMENTS", "BAD_USER_INPUT":
		byCode = KindInvalid
	case "CONFLICT", "ALREADY_EXISTS", "DUPLICATE":
		byCode = KindConflict
	case "RATE_LIMITED", "TOO_MANY_REQUESTS":
		byCode = KindRateLimited
	case "MAINTENANCE", "SERVICE_UNAVAILABLE", "SERVER_ERROR", "INTERNAL_SERVER_ERROR":
		byCode = KindTransient
	}
	if (byCode == KindUnknown || byCode == KindInvalid) && isDuplicateMessage(m) {
		return KindConflict
	}
	if byCode != KindUnknown {
		return byCode
	}
	switch {
	case strings.HasPrefix(m, "could not find"),
		strings.Contains(m, "not found"),
		strings.Contains(m, "does not exist"):
		return KindNotFound
	case strings.Contains(m, "not authorized"),
		strings.Contains(m, "unauthorized"),
		strings.Contains(m, "must be authenticated"),
		strings.Contains(m, "not authenticated"):
		return KindUnauthorized
	}
	return KindUnknown
}

func isDuplicateMessage(m string) bool {
	for _, s := range []string{"already exists", "already been taken", "already taken", "already in use", "duplicate"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// classifyHTTP maps a non-200 HTTP status to a kind.
func classifyHTTP(status int) ErrorKind {
	switch {
	case status == 401 || status == 403:
		return KindUnauthorized
	case status == 429:
		return KindRateLimited
	case status == 408 || status >= 500:
		return KindTransient
	case status == 404:
		return KindUnknown // wrong base URL, not a missing object
	case status == 400 || status == 422:
		return KindInvalid
	}
	return KindUnknown
}

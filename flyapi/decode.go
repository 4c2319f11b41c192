package flyapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/glaceon/glaceon/flyapi/target"
)

// maxMessageLen bounds a server message copied into an Error.
const maxMessageLen = 512

// gqlError is one entry of the GraphQL "errors" array, decoded leniently.
type gqlError struct {
	Message string
	Code    string
	Path    []any
}

// decodeResponse turns an HTTP status, headers and body (already limited to
// MaxResponseSize+1 bytes) into the GraphQL "data" member or a typed error.
// It never panics, whatever the input. Op and hints are filled by the caller.
func decodeResponse(status int, header http.Header, body []byte) (json.RawMessage, *Error) {
	if len(body) > MaxResponseSize {
		kind := KindUnknown
		if status >= 500 {
			kind = KindTransient
		}
		return nil, &Error{Kind: kind, HTTPStatus: status, summary: "invalid response",
			Message: fmt.Sprintf("response body larger than %d bytes", MaxResponseSize), ambiguous: true}
	}
	data, errs, perr := parseEnvelope(body)

	if status != http.StatusOK {
		e := &Error{Kind: classifyHTTP(status), HTTPStatus: status}
		if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
			e.RetryAfter = parseRetryAfter(header.Get("Retry-After"), time.Now())
		}
		// 5xx and timeouts may come after the server applied a mutation.
		e.ambiguous = status >= 500 || status == http.StatusRequestTimeout
		if perr == nil && len(errs) > 0 {
			fillFromGraphQL(e, errs)
			// Trust the GraphQL classification when the status says little.
			if k := classifyGraphQL(e.Code, e.Message); k != KindUnknown && (e.Kind == KindUnknown || e.Kind == KindInvalid) {
				e.Kind = k
			}
			if e.Kind == KindNotFound {
				e.Object = notFoundObjectOf(e.Message, e.Path)
			}
		} else if len(bytes.TrimSpace(body)) > 0 {
			e.Message = describeBody(status, header, body)
		}
		return nil, e
	}

	if perr != nil {
		// A 200 that is not a GraphQL envelope: a proxy page, a wrong base
		// URL, a truncated body. Worth a retry for queries; a mutation
		// may or may not have run.
		return nil, &Error{Kind: KindTransient, HTTPStatus: status, summary: "invalid response",
			Message: perr.Error() + " (" + describeBody(status, header, body) + ")", ambiguous: true}
	}
	if len(errs) > 0 {
		e := &Error{HTTPStatus: status}
		fillFromGraphQL(e, errs)
		e.Kind = classifyGraphQL(e.Code, e.Message)
		if e.Kind == KindNotFound {
			e.Object = notFoundObjectOf(e.Message, e.Path)
		}
		switch strings.ToUpper(e.Code) {
		case "SERVER_ERROR", "INTERNAL_SERVER_ERROR":
			e.ambiguous = true
		}
		return nil, e
	}
	if isNull(data) {
		return nil, &Error{Kind: KindUnknown, HTTPStatus: status, summary: "invalid response",
			Message: "response has neither data nor errors"}
	}
	return data, nil
}

// parseEnvelope decodes {"data": ..., "errors": [...]}. A missing or null
// "errors" is no error; "errors" of another type is a parse error.
func parseEnvelope(body []byte) (json.RawMessage, []gqlError, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, nil, fmt.Errorf("empty response body")
	}
	if trimmed[0] != '{' {
		return nil, nil, fmt.Errorf("response is not a JSON object")
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &env); err != nil {
		return nil, nil, fmt.Errorf("response is not valid JSON: %s", jsonErrText(err))
	}
	var errs []gqlError
	if raw, ok := env["errors"]; ok && !isNull(raw) {
		var list []json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, nil, fmt.Errorf("response \"errors\" is not an array")
		}
		for _, item := range list {
			errs = append(errs, parseGQLError(item))
		}
	}
	return env["data"], errs, nil
}

func parseGQLError(raw json.RawMessage) gqlError {
	var e gqlError
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		// A bare string is sometimes used as an error.
		var s string
		if json.Unmarshal(raw, &s) == nil {
			e.Message = s
		} else {
			e.Message = "malformed GraphQL error entry"
		}
		return e
	}
	_ = json.Unmarshal(m["message"], &e.Message)
	var ext map[string]json.RawMessage
	if json.Unmarshal(m["extensions"], &ext) == nil {
		_ = json.Unmarshal(ext["code"], &e.Code)
	}
	var path []any
	if json.Unmarshal(m["path"], &path) == nil {
		for _, p := range path {
			switch v := p.(type) {
			case string:
				e.Path = append(e.Path, target.Shorten(v))
			case float64:
				if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
					e.Path = append(e.Path, int(v))
				}
			}
			if len(e.Path) >= 32 {
				break
			}
		}
	}
	return e
}

func fillFromGraphQL(e *Error, errs []gqlError) {
	first := errs[0]
	e.Message = cleanMessage(first.Message)
	e.Code = cleanMessage(first.Code)
	if len(e.Code) > 64 {
		e.Code = e.Code[:64]
	}
	e.Path = first.Path
	e.extra = len(errs) - 1
	if e.Message == "" {
		e.Message = "GraphQL error without a message"
	}
}

// cleanMessage makes a server string safe to embed in one line: valid UTF-8,
// no control characters, bounded length.
func cleanMessage(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxMessageLen {
		cut := maxMessageLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// describeBody summarises a body that is not a GraphQL envelope without
// copying it (an HTML error page is noise).
func describeBody(status int, header http.Header, body []byte) string {
	ct := header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		ct = mt
	}
	if ct == "" {
		ct = "no content type"
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return fmt.Sprintf("HTTP %d with an empty body", status)
	}
	return fmt.Sprintf("HTTP %d with a %d-byte %s body", status, len(body), cleanMessage(target.Shorten(ct)))
}

func jsonErrText(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return "syntax error at byte " + strconv.FormatInt(e.Offset, 10)
	case *json.UnmarshalTypeError:
		return fmt.Sprintf("field %s: got JSON %s, want %s", e.Field, e.Value, e.Type)
	}
	return cleanMessage(err.Error())
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// parseRetryAfter reads delta-seconds or an HTTP date. Unknown forms, and
// negative values, give 0. The result is capped at one hour.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	const ceiling = time.Hour
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(ceiling/time.Second) {
			return ceiling
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d <= 0 {
			return 0
		}
		if d > ceiling {
			return ceiling
		}
		return d
	}
	return 0
}

// decodeData unmarshals the "data" member into out, mapping shape errors to
// a typed error that names the field.
func decodeData(op string, data json.RawMessage, out any) error {
	if e := decodeDataE(op, data, out); e != nil {
		return e
	}
	return nil
}

func decodeDataE(op string, data json.RawMessage, out any) *Error {
	if err := json.Unmarshal(data, out); err != nil {
		return &Error{Op: op, Kind: KindUnknown, summary: "invalid response",
			Message: "unexpected response shape: " + jsonErrText(err)}
	}
	return nil
}

// invalidResponse is the error for a response whose values fail validation.
func invalidResponse(op, field, format string, args ...any) *Error {
	return &Error{Op: op, Kind: KindUnknown, summary: "invalid response",
		Message: "field " + field + ": " + cleanMessage(fmt.Sprintf(format, args...))}
}

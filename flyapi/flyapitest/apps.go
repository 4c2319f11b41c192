package flyapitest

import (
	"io"
	"net/http"
	"strconv"
)

// bytesPattern: byte i of every /bytes body is byte(i % 251).
var bytesPattern = func() []byte {
	b := make([]byte, 251*256)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}()

// BytesPattern returns the repeating block of every /bytes body (byte i is
// byte(i % 251)), for checking what came through a tunnel. Callers must not
// modify it.
func BytesPattern() []byte { return bytesPattern }

// SampleApp serves the sample app named app, as the double's gateway does
// on every flycast address: "/" answers "ok <app>\n", "/bytes?n=N" N bytes of
// BytesPattern, "/echo" the request body back (full duplex); anything else
// is 404. Benchmarks with a gateway of their own serve the same apps
// through it, so every harness measures one set of handlers.
func SampleApp(w http.ResponseWriter, r *http.Request, app string) {
	switch r.URL.Path {
	case "/":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok "+app+"\n")
	case "/bytes":
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > maxBytesParam {
			http.Error(w, "n must be an integer in [0, 8GiB]", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		if r.Method == http.MethodHead {
			return
		}
		for n > 0 {
			chunk := min(int64(len(bytesPattern)), n)
			if _, err := w.Write(bytesPattern[:chunk]); err != nil {
				return
			}
			n -= chunk
		}
	case "/echo":
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set("Content-Type", "application/octet-stream")
		if r.ContentLength >= 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
		}
		_, _ = io.CopyBuffer(w, r.Body, make([]byte, 64<<10))
	default:
		http.NotFound(w, r)
	}
}

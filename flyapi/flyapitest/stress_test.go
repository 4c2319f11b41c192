package flyapitest

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkGatewayDownload downloads 64 MiB per iteration through the
// gateway with an in-process wireguard-go client, and reports the heap
// after GC so a leak across iterations shows.
func BenchmarkGatewayDownload(b *testing.B) {
	const size = 64 << 20
	s := Start(b, Options{Logf: func(string, ...any) {}})
	c := newWGClient(b, s, "personal", "bulk")
	b.SetBytes(size)
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://twi-ollama.flycast/bytes?n="+strconv.Itoa(size), nil)
		resp, err := c.http.Do(req)
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		cancel()
		if err != nil || n != size {
			b.Fatalf("got %d bytes: %v", n, err)
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
}

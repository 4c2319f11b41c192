package flyapitest

import (
	"context"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestBulkTransfer downloads FLYAPITEST_BULK_MIB MiB (default: skipped)
// FLYAPITEST_BULK_ROUNDS times through the gateway and reports throughput.
func TestBulkTransfer(t *testing.T) {
	mib, _ := strconv.Atoi(os.Getenv("FLYAPITEST_BULK_MIB"))
	if mib <= 0 {
		t.Skip("set FLYAPITEST_BULK_MIB to run")
	}
	rounds, _ := strconv.Atoi(os.Getenv("FLYAPITEST_BULK_ROUNDS"))
	if rounds <= 0 {
		rounds = 1
	}
	s := Start(t, Options{Logf: func(string, ...any) {}})
	c := newWGClient(t, s, "personal", "bulk")
	for i := 0; i < rounds; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://twi-ollama.flycast/bytes?n="+strconv.Itoa(mib<<20), nil)
		resp, err := c.http.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		cancel()
		if err != nil || n != int64(mib)<<20 {
			t.Fatalf("got %d bytes: %v", n, err)
		}
		el := time.Since(start)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		t.Logf("round %d: %d MiB in %v (%.1f MiB/s); heap after GC %.1f MiB, sys %.1f MiB, goroutines %d", i, mib, el.Round(time.Millisecond),
			float64(mib)/el.Seconds(), float64(ms.HeapAlloc)/(1<<20), float64(ms.Sys)/(1<<20), runtime.NumGoroutine())
	}
}

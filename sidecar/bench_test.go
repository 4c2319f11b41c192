package sidecar

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/trace"
	"slices"
	"testing"
	"time"
)

// BenchmarkTunnelDownload downloads through an in-process sidecar from the
// in-process Fly double. Both share the CPU, so use it for profiles and A/B
// comparisons; hack/bench-tunnel.sh measures the sidecar process alone.
//
//	go test ./sidecar -run '^$' -bench TunnelDownload -benchtime 4x -cpuprofile cpu.out
func BenchmarkTunnelDownload(b *testing.B) {
	const size = 128 << 20
	srv := startFly(b)
	_, addrs := startSidecar(b, newPeerFile(b, srv, "personal"), "twi-ollama.flycast:80")
	b.ResetTimer()
	benchDownload(b, "http://"+addrs[0], size)
}

// BenchmarkTunnelDownloadTransport runs the same download over each
// transport, side by side in one run (the ns/op ratio is the WebSocket
// path's cost; see hack/bench-tunnel.sh for the sidecar process alone).
//
//	go test ./sidecar -run '^$' -bench TunnelDownloadTransport -benchtime 4x
func BenchmarkTunnelDownloadTransport(b *testing.B) {
	const size = 128 << 20
	for _, tr := range []Transport{TransportUDP, TransportWebSocket} {
		b.Run(string(tr), func(b *testing.B) {
			srv := startFly(b)
			b.Setenv(EnvTransport, string(tr))
			r, addrs := startSidecar(b, newPeerFile(b, srv, "personal"), "twi-ollama.flycast:80")
			if p := r.s.tun.bind.Path().String(); p != string(tr) {
				b.Fatalf("path %s, want %s", p, tr)
			}
			b.ResetTimer()
			benchDownload(b, "http://"+addrs[0], size)
		})
	}
}

func benchDownload(b *testing.B, url string, size int64) {
	b.SetBytes(size)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}
	buf := make([]byte, 256<<10)
	for i := 0; i < b.N; i++ {
		resp, err := client.Get(fmt.Sprintf("%s/bytes?n=%d", url, size))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, resp.Body, buf)
		resp.Body.Close()
		if err != nil || n != size {
			b.Fatalf("got %d bytes, err %v", n, err)
		}
	}
}

// BenchmarkTunnelKeepAlive times small requests (GET /, a few bytes each
// way) on one keep-alive connection through an in-process sidecar, and the
// same handler on plain loopback TCP in the same process for reference.
// It reports the tunnel's p50 and p99 and plain loopback's p50 (µs); ns/op
// is the tunnel's mean. The Fly double's gateway shares the process, so
// compare variants within one run (docs/benchmarks.md).
//
//	go test ./sidecar -run '^$' -bench TunnelKeepAlive -benchtime 2000x -count 5
func BenchmarkTunnelKeepAlive(b *testing.B) {
	srv := startFly(b)
	_, addrs := startSidecar(b, newPeerFile(b, srv, "personal"), "twi-ollama.flycast:80")
	plain := startPlainHTTP(b)
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	tunnelURL, plainURL := "http://"+addrs[0]+"/", "http://"+plain+"/"
	for _, u := range []string{tunnelURL, plainURL} {
		smallGets(b, client, u, 50) // warm-up: connection, DNS, windows
	}
	pl := smallGets(b, client, plainURL, 500)
	b.ResetTimer()
	tl := smallGets(b, client, tunnelURL, b.N)
	b.StopTimer()
	b.ReportMetric(percentileMicros(tl, 0.5), "p50-µs")
	b.ReportMetric(percentileMicros(tl, 0.99), "p99-µs")
	b.ReportMetric(percentileMicros(pl, 0.5), "plain-p50-µs")
}

// startPlainHTTP serves "/" on plain loopback TCP the way the double's
// apps do, for the reference latency.
func startPlainHTTP(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok plain\n")
	})}
	go hs.Serve(ln)
	b.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

func smallGets(b *testing.B, client *http.Client, url string, n int) []time.Duration {
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		// A region per request, for execution traces (-trace): free
		// when tracing is off.
		r := trace.StartRegion(context.Background(), "GET "+url)
		t0 := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
		}
		lat = append(lat, time.Since(t0))
		r.End()
	}
	return lat
}

func percentileMicros(d []time.Duration, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[int(p*float64(len(s)-1))]) / 1e3
}

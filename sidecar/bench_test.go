package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"testing"
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

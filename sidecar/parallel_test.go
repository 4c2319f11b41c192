package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
)

// 100 parallel 4 MiB downloads through one forward must all complete.
//
// On a loaded machine a stream used to stall for tens of seconds or more:
// the sending TCP (the test gateway's gVisor stack) backed its
// retransmissions off towards gVisor's 120 s maximum after a burst of
// losses. The gateway caps it at 1 s now; see docs/benchmarks.md. Later a
// stream crawled at two segments per RTO in SACK recovery because of
// gVisor's RACK, now off in the gateway as in the sidecar (docs/stall.md);
// on a stall the failure prints both ends' TCP state to tell such cases
// apart.
func TestE2EParallelDownloads(t *testing.T) {
	if testing.Short() {
		t.Skip("100 parallel downloads")
	}
	checkGoroutines(t)
	srv := startFly(t)
	r, addrs := startSidecar(t, newPeerFile(t, srv, "personal"), "twi-ollama.flycast:80")
	const streams, size = 100, 4 << 20
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: streams}}
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	var mu sync.Mutex
	got := make([]int64, streams)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(fmt.Sprintf("http://%s/bytes?n=%d", addrs[0], size))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := resp.Body.Read(buf)
				mu.Lock()
				got[i] += int64(n)
				mu.Unlock()
				if err == io.EOF {
					break
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		mu.Lock()
		var stuck []string
		for i, g := range got {
			if g != size {
				stuck = append(stuck, fmt.Sprintf("%d:%d", i, g))
			}
		}
		mu.Unlock()
		// Both ends of every connection still open, so that a stall says
		// which TCP holds the bytes and in what state (docs/stall.md).
		gw, sc := srv.DescribeGatewayTCP(), flyapitest.DescribeTCP(r.s.tun.tun.stack)
		buf := make([]byte, 8<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("downloads stalled: %v\ngateway TCP (the senders):\n%s\nsidecar TCP (the receivers):\n%s\n%s",
			stuck, strings.Join(gw, "\n"), strings.Join(sc, "\n"), buf)
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, g := range got {
		if g != size {
			t.Errorf("stream %d: %d bytes", i, g)
		}
	}
}

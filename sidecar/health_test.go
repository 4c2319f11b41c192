package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rssBytes reads VmRSS of pid from /proc.
func rssBytes(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// raiseNoFile lifts RLIMIT_NOFILE to at least n for this process (and the
// processes it starts), restoring it at the end of the test.
func raiseNoFile(t testing.TB, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur >= n {
		return
	}
	lim := old
	lim.Cur = n
	if lim.Max < n {
		lim.Max = n
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raise RLIMIT_NOFILE to %d: %v", n, err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// TestHealthServerIdleFlood: a neighbour opens 5,000 connections to the
// health port from its own address (127.0.0.2 here; the probes come from
// 127.0.0.1), half of them after one request, and leaves them idle. The
// sidecar's RSS stays within budget, probes and the tunnel keep working, the
// excess is reset at once and the rest is closed by the timeouts.
func TestHealthServerIdleFlood(t *testing.T) {
	const (
		flood = 5000
		// budget over the idle RSS: before the bounds, 3,000 such
		// connections added ~70 MiB.
		rssBudget = 16 << 20
	)
	raiseNoFile(t, 2*flood+1024)
	bin := sidecarBinary(t)
	srv := startFly(t)
	cfg := newPeerFile(t, srv, "personal")
	listen, health, metricsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	_, healthPort, _ := net.SplitHostPort(health)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// [::] is what the injector passes: every address family, loopback included.
	cmd := exec.CommandContext(ctx, bin, "--wg-config", cfg, "--forward", listen+"=twi-ollama.flycast:80",
		"--health-addr", "[::]:"+healthPort, "--metrics-addr", metricsAddr, "--shutdown-grace", "1s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sidecar stderr:\n%s", stderr.String())
		}
	}()
	cl := &httpGetter{}
	waitFor(t, 15*time.Second, "binary ready", func() bool { return cl.ok("http://" + health + "/readyz") })
	throughTunnel := func() error {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get("http://" + listen + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "ok twi-ollama" {
			return fmt.Errorf("GET / = %d %q", resp.StatusCode, b)
		}
		return nil
	}
	if err := throughTunnel(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(idleRelease + 2*time.Second) // let the sidecar return start-up memory
	baseline := rssBytes(t, cmd.Process.Pid)

	// The flood, from 127.0.0.2, 50 dials at a time, bounded in time.
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	conns := make([]net.Conn, 0, flood)
	var mu sync.Mutex
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	floodCtx, floodCancel := context.WithTimeout(ctx, 60*time.Second)
	defer floodCancel()
	var resets int
	var dialErrs []error
	for i := 0; i < flood && floodCtx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			c, err := dialer.DialContext(floodCtx, "tcp", health)
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, syscall.ECONNRESET) {
				resets++ // over the limits: reset before the dial returned
				return
			}
			if err != nil {
				dialErrs = append(dialErrs, err)
				return
			}
			if i%2 == 0 {
				// One request, then idle as a keep-alive client would.
				_, _ = c.Write([]byte("GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"))
			}
			conns = append(conns, c)
		}(i)
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	t.Logf("flood: %d connections made, %d reset while dialing, %d failed", len(conns), resets, len(dialErrs))
	if len(dialErrs) > 0 || len(conns)+resets != flood {
		t.Fatalf("flood dials: %d made, %d reset, errors %v", len(conns), resets, dialErrs[:min(3, len(dialErrs))])
	}

	// While the flood holds its sockets: probes from another address and
	// the tunnel still work, and memory stays bounded.
	peak := rssBytes(t, cmd.Process.Pid)
	if !cl.ok("http://" + health + "/readyz") {
		t.Error("/readyz from 127.0.0.1 failed during the flood")
	}
	if err := throughTunnel(); err != nil {
		t.Errorf("tunnel during the flood: %v", err)
	}
	var maxOpen int
	deadline := time.Now().Add(serveIdleTimeout + serveReadHeaderTimeout + 10*time.Second)
	closed := 0
	buf := make([]byte, 512)
	for _, c := range conns {
		// Every flood connection is ended by the sidecar: reset at once
		// over the limits, or closed by a timeout.
		_ = c.SetReadDeadline(deadline)
		for {
			_, err := c.Read(buf)
			if err == nil {
				continue // the answer to the one request
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			closed++
			break
		}
		if rss := rssBytes(t, cmd.Process.Pid); rss > peak {
			peak = rss
		}
		maxOpen = max(maxOpen, countOpenFDs(t, cmd.Process.Pid))
	}
	t.Logf("RSS baseline %.1f MiB, peak during the flood %.1f MiB; at most %d fds open in the sidecar",
		float64(baseline)/(1<<20), float64(peak)/(1<<20), maxOpen)
	if closed != len(conns) {
		t.Errorf("%d of %d flood connections still open after the timeouts", len(conns)-closed, len(conns))
	}
	if peak-baseline > rssBudget {
		t.Errorf("RSS grew by %.1f MiB under the flood, budget %d MiB", float64(peak-baseline)/(1<<20), rssBudget>>20)
	}
	if maxOpen > serveMaxConns+64 {
		t.Errorf("sidecar held %d fds during the flood; the health server may hold %d connections", maxOpen, serveMaxConns)
	}
	if !cl.ok("http://" + health + "/readyz") {
		t.Error("/readyz failed after the flood")
	}
	if err := throughTunnel(); err != nil {
		t.Errorf("tunnel after the flood: %v", err)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `glaceon_serve_connections_rejected_total{server="health"}`) {
		t.Error("no glaceon_serve_connections_rejected_total for the flood")
	}
	// /metrics is not on the health port.
	resp, err = http.Get("http://" + health + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the health port = %d, want 404", resp.StatusCode)
	}
}

func countOpenFDs(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestLimitListenerCaps(t *testing.T) {
	inner, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	rejected := 0
	var rmu sync.Mutex
	l := newLimitListener(inner, 3, 2, func() { rmu.Lock(); rejected++; rmu.Unlock() })
	defer l.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func(src byte) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, src)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", inner.Addr().String())
		if errors.Is(err, syscall.ECONNRESET) {
			return nil // reset by the limit before the dial returned
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	wait := func(what string, cond func() bool) { waitFor(t, 5*time.Second, what, cond) }
	var got []net.Conn
	take := func() {
		select {
		case c := <-accepted:
			got = append(got, c)
		case <-time.After(5 * time.Second):
			t.Fatal("no connection accepted")
		}
	}
	dial(2)
	dial(2)
	take()
	take()
	dial(2) // third from one address: reset
	wait("per-address reject", func() bool { rmu.Lock(); defer rmu.Unlock(); return rejected == 1 })
	dial(3)
	take()
	dial(4) // fourth in all: reset
	wait("total reject", func() bool { rmu.Lock(); defer rmu.Unlock(); return rejected == 2 })
	if n := l.open(); n != 3 {
		t.Fatalf("open = %d, want 3", n)
	}
	got[0].Close()
	got[0].Close() // a second Close must not release twice
	if n := l.open(); n != 2 {
		t.Fatalf("open after close = %d, want 2", n)
	}
	dial(2)
	take()
}

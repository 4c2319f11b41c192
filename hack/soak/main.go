// Command soak runs the glaceon-sidecar binary under hours-long connection
// churn against the Fly double (flyapi/flyapitest, real userspace WireGuard
// gateway on loopback) and checks that it comes back to its baseline:
// goroutines, open files and RSS, sampled every -sample, must return to
// what they were before the load once it stops.
//
// The churn: short HTTP requests on new connections, long echo streams,
// dials to a refused port and to a name that does not resolve, and a
// gateway restart half-way. It is a benchmark, not a test: run it by hand
// (make soak, or go run ./hack/soak -duration 30m) and put the table it
// prints in docs/benchmarks.md. It exits 1 when a figure does not come back.
//
// Everything stays on loopback; every loop is bounded by -duration.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgquick"
)

func main() {
	duration := flag.Duration("duration", 30*time.Minute, "how long the churn runs")
	sample := flag.Duration("sample", time.Minute, "time between two samples")
	bin := flag.String("sidecar", "", "glaceon-sidecar binary (default: built from this tree)")
	rate := flag.Int("rate", 20, "short HTTP requests per second")
	streams := flag.Int("streams", 8, "concurrent long echo streams")
	flag.Parse()
	if err := run(*duration, *sample, *bin, *rate, *streams); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// counts of outcomes per kind of churn.
type counts struct {
	ok, failed atomic.Int64
}

type load struct {
	short, stream, refused, nxdomain counts
}

type sampleRow struct {
	at                     time.Duration
	phase                  string
	goroutines, fds        int
	rssMiB                 float64
	short, stream, refused string
	nxdomain               string
}

func run(duration, sampleEvery time.Duration, bin string, rate, streams int) error {
	dir, err := os.MkdirTemp("", "glaceon-soak")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		bin = filepath.Join(dir, "glaceon-sidecar")
		if out, err := exec.Command("go", "build", "-o", bin, "github.com/glaceon/glaceon/cmd/glaceon-sidecar").CombinedOutput(); err != nil {
			return fmt.Errorf("build the sidecar: %v\n%s", err, out)
		}
	}
	srv, err := flyapitest.NewServer(flyapitest.Options{})
	if err != nil {
		return err
	}
	defer srv.Close()
	cfgPath, err := peerFile(srv, dir)
	if err != nil {
		return err
	}
	addr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	httpL, echoL, refusedL, nxL, health, metrics := addr(), addr(), addr(), addr(), addr(), addr()
	cmd := exec.Command(bin, "--wg-config", cfgPath,
		"--forward", httpL+"=twi-ollama.flycast:80",
		"--forward", echoL+"=echo.flycast:7",
		"--forward", refusedL+"=twi-ollama.flycast:81",
		"--forward", nxL+"=nosuch.flycast:80",
		"--health-addr", health, "--metrics-addr", metrics, "--log-level", "error")
	cmd.Stderr = os.Stderr
	// The sidecar dies with the soak, however the soak ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid
	if err := waitReady("http://"+health+"/readyz", 30*time.Second); err != nil {
		return err
	}

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	// One of each, then quiet, for the baseline.
	l := &load{}
	ctx0, cancel0 := context.WithTimeout(context.Background(), 30*time.Second)
	shortOnce(ctx0, client, httpL, &l.short)
	streamOnce(ctx0, echoL, time.Second, &l.stream)
	refusedOnce(refusedL, &l.refused)
	refusedOnce(nxL, &l.nxdomain)
	cancel0()
	quiet := 20 * time.Second // > sidecar idle release (5s) + TIME-WAIT (5s)
	time.Sleep(quiet)
	var rows []sampleRow
	start := time.Now()
	take := func(phase string) (sampleRow, error) {
		g, err := goroutines("http://" + metrics + "/metrics")
		if err != nil {
			return sampleRow{}, err
		}
		row := sampleRow{at: time.Since(start).Round(time.Second), phase: phase, goroutines: g,
			fds: openFDs(pid), rssMiB: float64(rss(pid)) / (1 << 20),
			short: l.short.String(), stream: l.stream.String(), refused: l.refused.String(), nxdomain: l.nxdomain.String()}
		rows = append(rows, row)
		fmt.Fprintf(os.Stderr, "%8s %-9s goroutines %4d fds %4d rss %6.1f MiB  short %s stream %s refused %s nxdomain %s\n",
			row.at, phase, row.goroutines, row.fds, row.rssMiB, row.short, row.stream, row.refused, row.nxdomain)
		return row, nil
	}
	base, err := take("baseline")
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	// Short requests: rate per second, each on a new connection.
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
		defer tick.Stop()
		sem := make(chan struct{}, 32)
		var inner sync.WaitGroup
		defer inner.Wait()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				l.short.failed.Add(1) // 32 in flight already: count it, do not pile up
				continue
			}
			inner.Add(1)
			go func() { defer inner.Done(); defer func() { <-sem }(); shortOnce(ctx, client, httpL, &l.short) }()
		}
	}()
	// Long streams: each lives 30s-2m, one line a second.
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				streamOnce(ctx, echoL, 30*time.Second+rand.N(90*time.Second), &l.stream)
			}
		}()
	}
	// Refused and unresolvable targets: two a second each.
	for _, t := range []struct {
		addr string
		c    *counts
	}{{refusedL, &l.refused}, {nxL, &l.nxdomain}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					refusedOnce(t.addr, t.c)
				}
			}
		}()
	}
	// The gateway restarts half-way (down 5s).
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			return
		case <-time.After(duration / 2):
		}
		fmt.Fprintln(os.Stderr, "soak: restarting the gateway")
		if err := srv.StopGateway(); err != nil {
			fmt.Fprintln(os.Stderr, "soak: stop gateway:", err)
			return
		}
		time.Sleep(5 * time.Second)
		if err := srv.StartGateway(); err != nil {
			fmt.Fprintln(os.Stderr, "soak: start gateway:", err)
		}
	}()
	tick := time.NewTicker(sampleEvery)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			if _, err := take("load"); err != nil {
				fmt.Fprintln(os.Stderr, "soak: sample:", err)
			}
		}
	}
	tick.Stop()
	wg.Wait()
	time.Sleep(quiet)
	after, err := take("after")
	if err != nil {
		return err
	}
	// Ready again after the restart?
	if err := waitReady("http://"+health+"/readyz", 30*time.Second); err != nil {
		return fmt.Errorf("after the soak: %w", err)
	}
	printTable(rows, duration, rate, streams)
	if m, err := scrape("http://"+metrics+"/metrics", "glaceon_dial_errors_total", "glaceon_wireguard_reconfigurations_total", "glaceon_forward_connections_active"); err == nil {
		fmt.Printf("\nsidecar counters at the end:\n\n%s", m)
	}

	var bad []string
	if after.goroutines > base.goroutines+2 {
		bad = append(bad, fmt.Sprintf("goroutines %d after, %d before", after.goroutines, base.goroutines))
	}
	if after.fds > base.fds+2 {
		bad = append(bad, fmt.Sprintf("open files %d after, %d before", after.fds, base.fds))
	}
	if after.rssMiB > base.rssMiB*1.25+2 {
		bad = append(bad, fmt.Sprintf("RSS %.1f MiB after, %.1f MiB before", after.rssMiB, base.rssMiB))
	}
	if l.short.ok.Load() == 0 || l.stream.ok.Load() == 0 {
		bad = append(bad, "no successful short request or stream")
	}
	if n := l.refused.ok.Load() + l.nxdomain.ok.Load(); n == 0 {
		bad = append(bad, "refused and unresolvable targets were never closed promptly")
	}
	if len(bad) > 0 {
		return fmt.Errorf("not back to baseline: %s", strings.Join(bad, "; "))
	}
	fmt.Fprintln(os.Stderr, "soak: back to baseline")
	return nil
}

func (c *counts) String() string {
	return strconv.FormatInt(c.ok.Load(), 10) + "/" + strconv.FormatInt(c.failed.Load(), 10)
}

func printTable(rows []sampleRow, d time.Duration, rate, streams int) {
	fmt.Printf("soak %s: %d short requests/s, %d long streams, 2 refused + 2 unresolvable dials/s, gateway restart at %s\n\n",
		d, rate, streams, d/2)
	fmt.Println("| time | phase | goroutines | open files | RSS MiB | short ok/failed | streams ok/failed | refused ok/failed | unresolvable ok/failed |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %d | %d | %.1f | %s | %s | %s | %s |\n", r.at, r.phase, r.goroutines, r.fds, r.rssMiB, r.short, r.stream, r.refused, r.nxdomain)
	}
}

func shortOnce(ctx context.Context, c *http.Client, addr string, n *counts) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/bytes?n=2048", nil)
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			n.failed.Add(1)
		}
		return
	}
	got, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || got != 2048 {
		n.failed.Add(1)
		return
	}
	n.ok.Add(1)
}

// streamOnce holds one echo connection for d, a line a second.
func streamOnce(ctx context.Context, addr string, d time.Duration, n *counts) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		n.failed.Add(1)
		time.Sleep(time.Second)
		return
	}
	defer c.Close()
	br := bufio.NewReader(c)
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		if ctx.Err() != nil {
			n.ok.Add(1) // ended by the soak, not by a failure
			return
		}
		line := "line " + strconv.Itoa(i) + "\n"
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, line); err != nil {
			n.failed.Add(1)
			return
		}
		got, err := br.ReadString('\n')
		if err != nil || got != line {
			n.failed.Add(1)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	n.ok.Add(1)
}

// refusedOnce: the sidecar must close the connection promptly (a reset or
// EOF within 5s) when the target refuses or does not resolve.
func refusedOnce(addr string, n *counts) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if errors.Is(err, syscall.ECONNRESET) {
		n.ok.Add(1) // the reset beat connect(2) back: closed at once
		return
	}
	if err != nil {
		n.failed.Add(1)
		return
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		n.failed.Add(1)
		return
	}
	n.ok.Add(1)
}

func peerFile(srv *flyapitest.Server, dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := flyapi.New(flyapi.Options{BaseURL: srv.URL(), Token: srv.Token(), GatewayPort: srv.GatewayPort()})
	if err != nil {
		return "", err
	}
	o, err := c.Organization(ctx, "personal")
	if err != nil {
		return "", err
	}
	kp, err := wgquick.GenerateKeyPair()
	if err != nil {
		return "", err
	}
	p, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: *o, Name: "k8s-soak", PublicKey: kp.Public, Region: srv.Region()})
	if err != nil {
		return "", err
	}
	cfg, err := flyapi.NewWireGuardConfig(kp.Private, *p, srv.GatewayPort())
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "wg.conf")
	return path, os.WriteFile(path, cfg.Render(), 0o600)
}

func waitReady(url string, d time.Duration) error {
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("sidecar not ready within %s", d)
}

func goroutines(url string) (int, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	return 0, errors.New("no go_goroutines in /metrics")
}

// scrape returns the /metrics lines starting with one of prefixes.
func scrape(url string, prefixes ...string) (string, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		for _, p := range prefixes {
			if strings.HasPrefix(sc.Text(), p) {
				b.WriteString("    " + sc.Text() + "\n")
			}
		}
	}
	return b.String(), sc.Err()
}

func openFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

func rss(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Command bench-tunnel measures the glaceon sidecar end to end on loopback:
// it starts the Fly double (flyapitest: API + userspace WireGuard gateway +
// sample apps) in this process, runs the real sidecar binary as a separate
// process, and compares transfers and small requests through the tunnel with
// the same HTTP handlers served on plain loopback TCP, in the same run.
//
//	go run ./hack/bench-tunnel -sidecar /path/to/glaceon-sidecar [-size 1GiB]
//
// It samples the sidecar's peak RSS (VmHWM) and CPU time (utime+stime) from
// /proc. See docs/benchmarks.md. Loopback only.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	"github.com/glaceon/glaceon/hack/benchproc"
)

func main() {
	var (
		sidecar  = flag.String("sidecar", "", "path of the glaceon-sidecar binary (required)")
		sizeStr  = flag.String("size", "1GiB", "download size (e.g. 1GiB, 256MiB)")
		upStr    = flag.String("upload", "256MiB", "upload size through /echo (0 to skip)")
		requests = flag.Int("requests", 2000, "small keep-alive requests per side")
		newConns = flag.Int("new-conns", 300, "small requests on new connections per side")
		ready    = flag.Int("ready-runs", 5, "sidecar starts used to measure time to ready")
		jsonOut  = flag.String("json", "", "also write the results as JSON to this file")
		streams  = flag.Int("streams", 1, "parallel download streams sharing -size")
		transp   = flag.String("transports", "udp,websocket", "sidecar transports to measure, one run each, comma-separated (udp, websocket, auto)")
		blocked  = flag.Int("ready-blocked-runs", 3, "sidecar starts with UDP blocked at the gateway (transport auto) to time the fallback to WebSocket")
		baseline = flag.String("baseline", "", "optional: path of hack/bench-tunnel/vanilla, measured the same way after the sidecar")
	)
	var extraEnv benchproc.EnvFlag
	flag.Var(&extraEnv, "env", "extra environment for the sidecar, K=V, repeatable (e.g. -env GOMEMLIMIT=32MiB)")
	flag.Parse()
	parallel = max(1, *streams)
	if *sidecar == "" {
		fmt.Fprintln(os.Stderr, "bench-tunnel: -sidecar is required")
		os.Exit(2)
	}
	size, err := parseSize(*sizeStr)
	if err != nil {
		fatal("-size", err)
	}
	up, err := parseSize(*upStr)
	if err != nil {
		fatal("-upload", err)
	}
	var all []*Results
	for i, tr := range strings.Split(*transp, ",") {
		tr = strings.TrimSpace(tr)
		if i > 0 {
			fmt.Println()
		}
		nb := 0
		if i == 0 {
			nb = *blocked
		}
		res, err := run(*sidecar, tr, size, up, *requests, *newConns, *ready, nb, extraEnv)
		if err != nil {
			fatal("bench "+tr, err)
		}
		res.Binary = "glaceon-sidecar --transport " + tr
		res.print(os.Stdout)
		all = append(all, res)
	}
	if len(all) > 1 {
		fmt.Println()
		printSideBySide(os.Stdout, all)
	}
	if *baseline != "" {
		fmt.Println()
		base, err := run(*baseline, "", size, up, *requests, *newConns, min(*ready, 1), 0, nil)
		if err != nil {
			fatal("baseline", err)
		}
		base.Binary = "vanilla wireguard-go tun/netstack (baseline)"
		base.print(os.Stdout)
		all = append(all, base)
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(all, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fatal("-json", err)
		}
	}
}

func fatal(what string, err error) {
	fmt.Fprintf(os.Stderr, "bench-tunnel: %s: %v\n", what, err)
	os.Exit(1)
}

func parseSize(s string) (int64, error) {
	units := []struct {
		suf string
		mul int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"", 1}}
	for _, u := range units {
		if strings.HasSuffix(s, u.suf) {
			n, err := strconv.ParseInt(strings.TrimSuffix(s, u.suf), 10, 64)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("bad size %q", s)
			}
			return n * u.mul, nil
		}
	}
	return 0, fmt.Errorf("bad size %q", s)
}

// Results are what the run measured. Ratios are tunnel / plain loopback.
type Results struct {
	Binary     string `json:"binary"`
	When       string `json:"when"`
	GoVersion  string `json:"go"`
	CPUs       int    `json:"cpus"`
	LoadAvg    string `json:"loadavg_before"`
	SidecarEnv []string

	Transport     string    `json:"transport"`
	TimeToReadyMs []float64 `json:"time_to_ready_ms"`
	// TimeToReadyBlockedMs: starts in auto with UDP blocked at the gateway.
	TimeToReadyBlockedMs []float64 `json:"time_to_ready_udp_blocked_ms,omitempty"`
	IdleRSSMiB           float64   `json:"idle_rss_mib"`
	IdleHWMMiB           float64   `json:"idle_hwm_mib"`
	IdleAnonMiB          float64   `json:"idle_anon_mib"` // RssAnon: heap and stacks
	IdleFileMiB          float64   `json:"idle_file_mib"` // RssFile: the binary's mapped pages
	DownloadBytes        int64     `json:"download_bytes"`
	Streams              int       `json:"streams"`
	TunnelMbps           float64   `json:"tunnel_download_mbit_s"`
	PlainMbps            float64   `json:"plain_download_mbit_s"`
	PeakRSSMiB           float64   `json:"peak_rss_mib"` // VmHWM after the download
	CPUSecPerGiB         float64   `json:"cpu_s_per_gib"`
	UploadBytes          int64     `json:"upload_bytes"`
	TunnelUpMbps         float64   `json:"tunnel_upload_mbit_s"`
	PlainUpMbps          float64   `json:"plain_upload_mbit_s"`
	PeakRSSAfterUp       float64   `json:"peak_rss_after_upload_mib"`
	CPUSecPerGiBUp       float64   `json:"cpu_s_per_gib_moved_echo"` // bytes up + bytes down
	RSSAfterMiB          float64   `json:"rss_after_idle_mib"`
	KeepAlive            latency   `json:"keepalive_requests"`
	NewConn              latency   `json:"new_connection_requests"`
	SidecarCPUTotal      float64   `json:"sidecar_cpu_s_total"`
}

type latency struct {
	N          int     `json:"n"`
	TunnelP50  float64 `json:"tunnel_p50_us"`
	TunnelP99  float64 `json:"tunnel_p99_us"`
	PlainP50   float64 `json:"plain_p50_us"`
	PlainP99   float64 `json:"plain_p99_us"`
	TunnelRPS  float64 `json:"tunnel_req_s"`
	PlainRPS   float64 `json:"plain_req_s"`
	RatioP50   float64 `json:"ratio_p50"`
	RatioP99   float64 `json:"ratio_p99"`
	RatioThrpt float64 `json:"ratio_req_s"`
}

func (r *Results) print(w io.Writer) {
	fmt.Fprintf(w, "%s benchmark (%s, %s, %d CPUs, load before: %s)\n", r.Binary, r.When, r.GoVersion, r.CPUs, r.LoadAvg)
	if len(r.SidecarEnv) > 0 {
		fmt.Fprintf(w, "sidecar env: %s\n", strings.Join(r.SidecarEnv, " "))
	}
	fmt.Fprintf(w, "time to ready (ms, %d starts): %s\n", len(r.TimeToReadyMs), fmtList(r.TimeToReadyMs))
	if len(r.TimeToReadyBlockedMs) > 0 {
		fmt.Fprintf(w, "time to ready with UDP blocked, transport auto (ms, %d starts): %s\n", len(r.TimeToReadyBlockedMs), fmtList(r.TimeToReadyBlockedMs))
	}
	fmt.Fprintf(w, "idle RSS: %.1f MiB (anonymous %.1f, file-backed %.1f; VmHWM so far %.1f MiB)\n", r.IdleRSSMiB, r.IdleAnonMiB, r.IdleFileMiB, r.IdleHWMMiB)
	if r.Streams > 1 {
		fmt.Fprintf(w, "(download split over %d parallel streams)\n", r.Streams)
	}
	fmt.Fprintf(w, "download %d MiB: tunnel %.0f Mbit/s, plain loopback %.0f Mbit/s, ratio %.3f\n",
		r.DownloadBytes>>20, r.TunnelMbps, r.PlainMbps, r.TunnelMbps/r.PlainMbps)
	fmt.Fprintf(w, "  sidecar peak RSS (VmHWM) %.1f MiB, CPU %.2f s per GiB\n", r.PeakRSSMiB, r.CPUSecPerGiB)
	if r.UploadBytes > 0 {
		fmt.Fprintf(w, "upload %d MiB (/echo, both ways): tunnel %.0f Mbit/s, plain %.0f Mbit/s, ratio %.3f\n",
			r.UploadBytes>>20, r.TunnelUpMbps, r.PlainUpMbps, r.TunnelUpMbps/r.PlainUpMbps)
		fmt.Fprintf(w, "  sidecar peak RSS (VmHWM) %.1f MiB, CPU %.2f s per GiB moved (up + down)\n", r.PeakRSSAfterUp, r.CPUSecPerGiBUp)
	}
	for _, l := range []struct {
		name string
		v    latency
	}{{"keep-alive requests", r.KeepAlive}, {"new-connection requests", r.NewConn}} {
		fmt.Fprintf(w, "%s (n=%d): tunnel p50 %.0f µs p99 %.0f µs %.0f req/s | plain p50 %.0f µs p99 %.0f µs %.0f req/s | ratios p50 %.2f p99 %.2f req/s %.3f\n",
			l.name, l.v.N, l.v.TunnelP50, l.v.TunnelP99, l.v.TunnelRPS, l.v.PlainP50, l.v.PlainP99, l.v.PlainRPS, l.v.RatioP50, l.v.RatioP99, l.v.RatioThrpt)
	}
	fmt.Fprintf(w, "RSS after the transfers and 10 s idle: %.1f MiB; sidecar CPU total %.2f s\n", r.RSSAfterMiB, r.SidecarCPUTotal)
}

func fmtList(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', 1, 64)
	}
	return strings.Join(s, " ")
}

// --- plain loopback server with the same handlers as the sample apps ---

func plainHandler(w http.ResponseWriter, r *http.Request) {
	flyapitest.SampleApp(w, r, "plain")
}

// --- the run ---

// parallel is the number of concurrent download streams (-streams).
var parallel = 1

func download(client *http.Client, url string, n int64) (time.Duration, error) {
	if parallel > 1 {
		start := time.Now()
		errc := make(chan error, parallel)
		for i := 0; i < parallel; i++ {
			go func() {
				_, err := download1(client, url, n/int64(parallel))
				errc <- err
			}()
		}
		for i := 0; i < parallel; i++ {
			if err := <-errc; err != nil {
				return 0, err
			}
		}
		return time.Since(start), nil
	}
	return download1(client, url, n)
}

func download1(client *http.Client, url string, n int64) (time.Duration, error) {
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/bytes?n=%d", url, n), nil)
	return transfer(client, req, n, "downloaded")
}

// transfer sends req, reads the whole answer, checks that it is n bytes
// long and returns the time it all took.
func transfer(client *http.Client, req *http.Request, n int64, what string) (time.Duration, error) {
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	got, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 256<<10))
	if err != nil {
		return 0, err
	}
	if got != n {
		return 0, fmt.Errorf("%s %d of %d bytes", what, got, n)
	}
	return time.Since(start), nil
}

type countingReader struct {
	n, limit int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.n >= r.limit {
		return 0, io.EOF
	}
	k := int64(len(p))
	if k > r.limit-r.n {
		k = r.limit - r.n
	}
	for i := int64(0); i < k; {
		i += int64(copy(p[i:k], flyapitest.BytesPattern()))
	}
	r.n += k
	return int(k), nil
}

// upload POSTs n bytes to /echo and reads the echo back (both directions
// carry n bytes).
func upload(client *http.Client, url string, n int64) (time.Duration, error) {
	req, _ := http.NewRequest(http.MethodPost, url+"/echo", &countingReader{limit: n})
	req.ContentLength = n
	return transfer(client, req, n, "echoed")
}

func smallRequests(client *http.Client, url string, n int) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		t0 := time.Now()
		resp, err := client.Get(url + "/")
		if err != nil {
			return nil, 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return nil, 0, fmt.Errorf("request %d: status %d err %v", i, resp.StatusCode, err)
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, time.Since(start), nil
}

func compare(tunnel *http.Client, tunnelURL string, plain *http.Client, plainURL string, n int) (latency, error) {
	// Warm up both.
	if _, _, err := smallRequests(tunnel, tunnelURL, min(50, n)); err != nil {
		return latency{}, err
	}
	if _, _, err := smallRequests(plain, plainURL, min(50, n)); err != nil {
		return latency{}, err
	}
	tl, td, err := smallRequests(tunnel, tunnelURL, n)
	if err != nil {
		return latency{}, err
	}
	pl, pd, err := smallRequests(plain, plainURL, n)
	if err != nil {
		return latency{}, err
	}
	l := latency{N: n,
		TunnelP50: benchproc.PercentileMicros(tl, .5), TunnelP99: benchproc.PercentileMicros(tl, .99), PlainP50: benchproc.PercentileMicros(pl, .5), PlainP99: benchproc.PercentileMicros(pl, .99),
		TunnelRPS: float64(n) / td.Seconds(), PlainRPS: float64(n) / pd.Seconds()}
	l.RatioP50, l.RatioP99, l.RatioThrpt = l.TunnelP50/l.PlainP50, l.TunnelP99/l.PlainP99, l.TunnelRPS/l.PlainRPS
	return l, nil
}

func run(bin, transport string, size, up int64, requests, newConns, readyRuns, blockedRuns int, env []string) (*Results, error) {
	la, _ := os.ReadFile("/proc/loadavg")
	res := &Results{When: time.Now().UTC().Format(time.RFC3339), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(),
		LoadAvg: strings.Join(strings.Fields(string(la))[:3], " "), SidecarEnv: env, Transport: transport}

	srv, err := flyapitest.NewServer(flyapitest.Options{})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	// The double's WebSocket port stands in for 443.
	wsEnv := "FLY_WG_WEBSOCKET_PORT=" + strconv.Itoa(srv.WebSocketPort())
	if transport != "" {
		env = append(append([]string(nil), env...), "GLACEON_TRANSPORT="+transport, wsEnv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := flyapi.New(flyapi.Options{BaseURL: srv.URL(), Token: srv.Token(), GatewayPort: srv.GatewayPort()})
	if err != nil {
		return nil, err
	}
	org, err := c.Organization(ctx, "personal")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "bench-tunnel")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	// Each start gets its own peer (a fresh process must handshake anew).
	newCfg := func(i int) (string, error) {
		kp, err := wgquick.GenerateKeyPair()
		if err != nil {
			return "", err
		}
		// Its own deadline: the starts in between take seconds each.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		created, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: *org, Name: fmt.Sprintf("k8s-bench-%d-%d", os.Getpid(), i), PublicKey: kp.Public, Region: srv.Region()})
		if err != nil {
			return "", err
		}
		wc, err := flyapi.NewWireGuardConfig(kp.Private, *created, srv.GatewayPort())
		if err != nil {
			return "", err
		}
		p := filepath.Join(dir, fmt.Sprintf("wg%d.conf", i))
		return p, os.WriteFile(p, wc.Render(), 0o600)
	}

	// Time to ready: several cold starts.
	for i := 0; i < readyRuns; i++ {
		cfg, err := newCfg(100 + i)
		if err != nil {
			return nil, err
		}
		p, d, err := benchproc.Start(bin, cfg, env)
		if err != nil {
			return nil, err
		}
		res.TimeToReadyMs = append(res.TimeToReadyMs, float64(d.Microseconds())/1000)
		p.Stop()
	}

	// Time to ready in auto with UDP blocked: the fallback to WebSocket.
	if blockedRuns > 0 {
		srv.BlockUDP(true)
		for i := 0; i < blockedRuns; i++ {
			cfg, err := newCfg(200 + i)
			if err != nil {
				return nil, err
			}
			p, d, err := benchproc.Start(bin, cfg, append(append([]string(nil), env...), "GLACEON_TRANSPORT=auto", wsEnv))
			if err != nil {
				return nil, fmt.Errorf("start with UDP blocked: %w", err)
			}
			res.TimeToReadyBlockedMs = append(res.TimeToReadyBlockedMs, float64(d.Microseconds())/1000)
			p.Stop()
		}
		srv.BlockUDP(false)
	}

	cfg, err := newCfg(0)
	if err != nil {
		return nil, err
	}
	p, _, err := benchproc.Start(bin, cfg, env)
	if err != nil {
		return nil, err
	}
	defer p.Stop()
	pid := p.Pid()

	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	plainSrv := &http.Server{Handler: http.HandlerFunc(plainHandler)}
	go plainSrv.Serve(plainLn)
	defer plainSrv.Close()
	plainURL := "http://" + plainLn.Addr().String()
	tunnelURL := "http://" + p.Listen

	time.Sleep(2 * time.Second)
	st, err := benchproc.ReadMemory(pid)
	if err != nil {
		return nil, err
	}
	res.IdleRSSMiB, res.IdleHWMMiB = benchproc.MiB(st.RSSKiB), benchproc.MiB(st.HWMKiB)
	res.IdleAnonMiB, res.IdleFileMiB = benchproc.MiB(st.AnonKiB), benchproc.MiB(st.FileKiB)

	bulk := func() *http.Client {
		return &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true, ReadBufferSize: 256 << 10, WriteBufferSize: 256 << 10}}
	}
	// Download through the tunnel.
	var peakRSS atomic.Int64
	stopSampling := make(chan struct{})
	go func() {
		for {
			if s, err := benchproc.ReadMemory(pid); err == nil && s.RSSKiB > peakRSS.Load() {
				peakRSS.Store(s.RSSKiB)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	cpu0, _ := benchproc.CPUSeconds(pid)
	td, err := download(bulk(), tunnelURL, size)
	if err != nil {
		return nil, fmt.Errorf("tunnel download: %w", err)
	}
	cpu1, _ := benchproc.CPUSeconds(pid)
	st, _ = benchproc.ReadMemory(pid)
	res.DownloadBytes = size
	res.Streams = parallel
	res.TunnelMbps = float64(size) * 8 / td.Seconds() / 1e6
	res.PeakRSSMiB = benchproc.MiB(st.HWMKiB)
	res.CPUSecPerGiB = (cpu1 - cpu0) / (float64(size) / (1 << 30))

	pd, err := download(bulk(), plainURL, size)
	if err != nil {
		return nil, fmt.Errorf("plain download: %w", err)
	}
	res.PlainMbps = float64(size) * 8 / pd.Seconds() / 1e6

	if up > 0 {
		cpu0, _ := benchproc.CPUSeconds(pid)
		ud, err := upload(bulk(), tunnelURL, up)
		if err != nil {
			return nil, fmt.Errorf("tunnel upload: %w", err)
		}
		cpu1, _ := benchproc.CPUSeconds(pid)
		st, _ = benchproc.ReadMemory(pid)
		res.UploadBytes = up
		res.TunnelUpMbps = float64(up) * 8 / ud.Seconds() / 1e6
		res.PeakRSSAfterUp = benchproc.MiB(st.HWMKiB)
		res.CPUSecPerGiBUp = (cpu1 - cpu0) / (float64(2*up) / (1 << 30))
		pu, err := upload(bulk(), plainURL, up)
		if err != nil {
			return nil, fmt.Errorf("plain upload: %w", err)
		}
		res.PlainUpMbps = float64(up) * 8 / pu.Seconds() / 1e6
	}
	close(stopSampling)

	ka := func() *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
	}
	if res.KeepAlive, err = compare(ka(), tunnelURL, ka(), plainURL, requests); err != nil {
		return nil, fmt.Errorf("keep-alive requests: %w", err)
	}
	nc := func() *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}
	}
	if res.NewConn, err = compare(nc(), tunnelURL, nc(), plainURL, newConns); err != nil {
		return nil, fmt.Errorf("new-connection requests: %w", err)
	}
	// The sidecar hands memory back after 5 s without traffic.
	time.Sleep(10 * time.Second)
	st, _ = benchproc.ReadMemory(pid)
	res.RSSAfterMiB = benchproc.MiB(st.RSSKiB)
	res.SidecarCPUTotal, _ = benchproc.CPUSeconds(pid)
	return res, nil
}

// printSideBySide puts the main figures of each transport in one table.
func printSideBySide(w io.Writer, all []*Results) {
	base := all[0]
	fmt.Fprintf(w, "side by side (ratios against --transport %s, same run):\n", base.Transport)
	fmt.Fprintf(w, "%-10s %12s %8s %10s %8s %14s %14s %10s\n", "transport", "down Mbit/s", "ratio", "CPU-s/GiB", "ratio", "ka p50/p99 µs", "new p50/p99 µs", "peak RSS")
	for _, r := range all {
		fmt.Fprintf(w, "%-10s %12.0f %8.2f %10.2f %8.2f %14s %14s %9.1fM\n", r.Transport,
			r.TunnelMbps, r.TunnelMbps/base.TunnelMbps, r.CPUSecPerGiB, r.CPUSecPerGiB/base.CPUSecPerGiB,
			fmt.Sprintf("%.0f/%.0f", r.KeepAlive.TunnelP50, r.KeepAlive.TunnelP99),
			fmt.Sprintf("%.0f/%.0f", r.NewConn.TunnelP50, r.NewConn.TunnelP99), r.PeakRSSMiB)
	}
}

// Command bench-wan measures the glaceon sidecar and the stock wireguard-go
// forwarder (hack/bench-tunnel/vanilla) side by side across emulated WAN
// paths: RTT × loss × direction × parallel streams.
//
// The Fly side is a gateway that does not cap: wireguard-go on a real TUN
// device whose interface is in a network namespace (made by
// hack/bench-wan.sh), with the org's 6PN addresses on it and the sample
// apps served by Linux TCP in that namespace; the API is flyapitest. Between
// the proxy under test and the gateway's loopback UDP socket sits a
// userspace link emulator (package link). See docs/benchmarks.md.
//
//	hack/bench-wan.sh [-quick] [-json out.json] [-svg docs/bench-wan.svg]
//
// Must run as root (TUN, namespaces, SO_RCVBUFFORCE). Loopback and the
// namespace only.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	"github.com/glaceon/glaceon/hack/bench-wan/link"
	"github.com/glaceon/glaceon/hack/benchproc"
)

const org = "personal"

type binary struct{ name, path string }

// The transports a sidecar cell can run over.
const (
	udp       = "udp"
	websocket = "websocket"
)

// spec is one cell of the matrix.
type spec struct {
	// Transport is the sidecar's: udp through the UDP link emulator, or
	// websocket (WireGuard over WebSocket over TLS, as flyctl speaks it)
	// through the stream relay, with the same delay and rate cap and no
	// loss. The stock forwarder has no WebSocket mode: it runs in udp
	// cells only.
	Transport string
	RTT       time.Duration
	Loss      float64 // per direction
	Dir       string  // "download" or "upload"
	Streams   int
	Rate      float64 // bit/s cap, 0 = none
}

// Cell is one binary's result in one cell.
type Cell struct {
	Binary     string  `json:"binary"`
	Transport  string  `json:"transport"` // udp or websocket; "" in runs before it was measured means udp
	RTTms      float64 `json:"rtt_ms"`
	Loss       float64 `json:"loss"`
	Dir        string  `json:"dir"`
	Streams    int     `json:"streams"`
	RateMbit   float64 `json:"rate_cap_mbit_s"`
	Mbps       float64 `json:"mbit_s"`
	Bytes      int64   `json:"bytes_measured"`
	Seconds    float64 `json:"seconds_measured"`
	CPUPerGiB  float64 `json:"cpu_s_per_gib"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// PeakAnonMiB, FileMiB: the largest anonymous and file-backed parts of
	// the resident set seen by the 100 ms sampler. The file-backed part is
	// the executable's pages, shared by every pod running the same image;
	// the anonymous part is what one more pod costs a node.
	PeakAnonMiB float64 `json:"peak_anon_mib,omitempty"`
	FileMiB     float64 `json:"file_rss_mib,omitempty"`
	// WindowBytes: sum over streams of the largest receive window seen by
	// the Linux side (advertised by the proxy for downloads, by Linux for
	// uploads); BoundMbps = min(rate cap, window ÷ RTT), 0 = unbounded.
	WindowBytes  int64   `json:"window_bytes"`
	BoundMbps    float64 `json:"bound_mbit_s"`
	Retrans      int64   `json:"linux_retransmits"`
	KernelMinRTT float64 `json:"linux_min_rtt_ms"`
	Stalled      int     `json:"stalled_streams"`
	RcvbufErrors int64   `json:"udp_rcvbuf_errors"` // system-wide
	PathDrops    int64   `json:"udp_path_drops"`    // this path's sockets only
	ReadyMs      float64 `json:"ready_ms"`
	// LinkUp, LinkDown: the emulator's counts for the path this cell
	// used (the UDP relay, or the stream relay for websocket cells, whose
	// "datagrams" are the chunks one read returned).
	LinkUp   link.DirStats `json:"link_up"`
	LinkDown link.DirStats `json:"link_down"`
	// StreamWaits: reads of the stream relay that waited for room in the
	// bottleneck queue (backpressure where UDP drops at the tail).
	StreamWaits int64 `json:"stream_relay_waits,omitempty"`
	// WSDatagrams: WireGuard datagrams the gateway received over
	// WebSockets during the cell (0 in udp cells: the check that each cell
	// used the transport it says).
	WSDatagrams int64 `json:"gateway_ws_datagrams_in"`
}

// Latency is small-request latency on one keep-alive connection.
type Latency struct {
	Binary    string  `json:"binary"`
	Transport string  `json:"transport"`
	RTTms     float64 `json:"rtt_ms"`
	N         int     `json:"n"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
}

// Report is everything one run measured.
type Report struct {
	When       string    `json:"when"`
	Host       string    `json:"host"`
	LoadBefore string    `json:"load_before"`
	LoadAfter  string    `json:"load_after"`
	Quick      bool      `json:"quick"`
	Duration   float64   `json:"seconds_per_cell"`
	Warmup     float64   `json:"warmup_seconds"`
	Cells      []Cell    `json:"cells"`
	Latency    []Latency `json:"latency"`
	PlainP50us float64   `json:"plain_loopback_p50_us"`
	PlainP99us float64   `json:"plain_loopback_p99_us"`
	Elapsed    float64   `json:"elapsed_s"`
	Sysctls    []string  `json:"netns_sysctls"`
	GatewayCC  string    `json:"gateway_cc,omitempty"` // the apps' TCP congestion control (-gateway-cc)
	SidecarEnv []string  `json:"sidecar_env,omitempty"`
	Transports []string  `json:"transports"`
	// WSPath is how the WebSocket's TCP crossed the link: "packet" (its IP
	// packets on a TUN path: delay, queue and loss) or "stream" (a byte
	// stream relay: delay and backpressure, no loss). "" in runs before
	// the packet path existed means stream.
	WSPath string `json:"ws_path,omitempty"`
	// NotMeasured lists the websocket cells left out, and why.
	NotMeasured []string `json:"not_measured,omitempty"`
}

func main() {
	var (
		sidecar  = flag.String("sidecar", "", "path of the glaceon-sidecar binary (required)")
		baseline = flag.String("baseline", "", "path of hack/bench-tunnel/vanilla (required)")
		before   = flag.String("before", "", "optional: a second glaceon-sidecar (e.g. main's) measured in every cell too, for before/after ratios in one run")
		netns    = flag.String("netns", "", "network namespace (under /run/netns) for the gateway's interface (required)")
		ifName   = flag.String("ifname", "glwan0", "name of the gateway's TUN interface")
		quick    = flag.Bool("quick", false, "a reduced matrix (RTT 0 and 50 ms, loss 0 and 1 %, short cells)")
		dur      = flag.Duration("duration", 0, "time per cell (default 5s, 2s with -quick)")
		rateMbit = flag.Float64("rate", 200, "rate cap in Mbit/s on the non-loopback paths (0 = none)")
		jsonOut  = flag.String("json", "", "write the results as JSON to this file")
		svgOut   = flag.String("svg", "", "write the throughput plot (SVG) to this file")
		fromJSON = flag.String("from-json", "", "do not measure: print the tables and plot of an earlier -json file")
		workdir  = flag.String("workdir", "", "directory for the proxies' wg-quick files (default: a new one under $TMPDIR)")
		rttList  = flag.String("rtts", "", "override the matrix's RTTs, comma-separated durations (0 = loopback)")
		lossList = flag.String("losses", "", "override the matrix's loss rates, comma-separated fractions per direction")
		dirList  = flag.String("dirs", "", "override the directions: download,upload")
		strList  = flag.String("streams", "", "override the parallel stream counts, comma-separated")
		trList   = flag.String("transports", "udp,websocket", "the sidecar's transports, comma-separated: udp, websocket")
		relayTo  = flag.String("relay-target", "", "internal: run as the link emulator process, forwarding UDP to this address")
		relayWS  = flag.String("relay-ws-target", "", "internal: with -relay-target, relay TCP (the WebSocket) to this address")
		gwCC     = flag.String("gateway-cc", "cubic", "TCP congestion control of the Linux side (the download sender), fixed so results do not depend on the host's default: cubic (Linux's default), bbr, reno")
		wsPath   = flag.String("ws-path", pathPacket, "how the WebSocket's TCP crosses the emulated link: packet (its IP packets, with loss) or stream (a byte-stream relay, no loss)")
	)
	var extraEnv benchproc.EnvFlag
	flag.Var(&extraEnv, "env", "extra environment for glaceon-sidecar only, K=V, repeatable (e.g. -env GLACEON_TUNING=rack=1,minrto=50ms)")
	flag.Parse()
	if *relayTo != "" {
		runRelay(*relayTo, *relayWS, *netns, *ifName)
		return
	}
	if *fromJSON != "" {
		b, err := os.ReadFile(*fromJSON)
		if err != nil {
			fatal(err)
		}
		var rep Report
		if err := json.Unmarshal(b, &rep); err != nil {
			fatal(fmt.Errorf("%s: %w", *fromJSON, err))
		}
		output(&rep, *svgOut, "")
		return
	}
	if *sidecar == "" || *baseline == "" || *netns == "" {
		fmt.Fprintln(os.Stderr, "bench-wan: -sidecar, -baseline and -netns are required (run hack/bench-wan.sh)")
		os.Exit(2)
	}
	h := &harness{quick: *quick, dur: *dur, rate: *rateMbit * 1e6,
		bins: []binary{{side, *sidecar}, {base, *baseline}}, workdir: *workdir, sidecarEnv: extraEnv}
	if err := h.setGatewayCC(*gwCC); err != nil {
		fatal(err)
	}
	if *before != "" {
		h.bins = append(h.bins, binary{prev, *before})
	}
	err := h.overrides(*rttList, *lossList, *dirList, *strList)
	if err == nil {
		err = h.parseTransports(*trList)
	}
	if err == nil && *wsPath != pathPacket && *wsPath != pathStream {
		err = fmt.Errorf("-ws-path: %q is neither %s nor %s", *wsPath, pathPacket, pathStream)
	}
	h.wsPath = *wsPath
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-wan:", err)
		os.Exit(2)
	}
	if h.dur == 0 {
		h.dur = 5 * time.Second
		if h.quick {
			h.dur = 2 * time.Second
		}
	}
	rep, err := h.run(*netns, *ifName)
	if err != nil {
		fatal(err)
	}
	output(rep, *svgOut, *jsonOut)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench-wan:", err)
	os.Exit(1)
}

func output(rep *Report, svgOut, jsonOut string) {
	printReport(os.Stdout, rep)
	if jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(jsonOut, b, 0o644); err != nil {
			fatal(err)
		}
	}
	if svgOut != "" {
		if err := os.WriteFile(svgOut, plotSVG(rep), 0o644); err != nil {
			fatal(err)
		}
	}
}

type harness struct {
	quick bool
	dur   time.Duration
	rate  float64
	bins  []binary

	gw        *kernelGateway
	gatewayCC string // -gateway-cc
	relay     *relayProc
	// Matrix overrides (nil = the default matrix).
	rtts    []time.Duration
	losses  []float64
	dirs    []string
	streams []int

	transports []string // udp, websocket
	wsPath     string   // pathPacket or pathStream

	cfgsPath map[string]string // binary -> wg-quick file whose Endpoint is the packet path's far end

	cfgs       map[string]string // binary -> wg-quick file
	dir        string
	workdir    string
	sidecarEnv []string
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func (h *harness) matrix() (rtts []time.Duration, losses []float64, dirs []string, streams []int) {
	rtts, losses, dirs, streams = []time.Duration{0, 10 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond},
		[]float64{0, 0.001, 0.01}, []string{"download", "upload"}, []int{1, 16}
	if h.quick {
		rtts, losses = []time.Duration{0, 50 * time.Millisecond}, []float64{0, 0.01}
	}
	if h.rtts != nil {
		rtts = h.rtts
	}
	if h.losses != nil {
		losses = h.losses
	}
	if h.dirs != nil {
		dirs = h.dirs
	}
	if h.streams != nil {
		streams = h.streams
	}
	return
}

// overrides parses the -rtts, -losses, -dirs and -streams flags.
func (h *harness) overrides(rtts, losses, dirs, streams string) error {
	for _, f := range benchproc.SplitList(rtts) {
		d, err := time.ParseDuration(f)
		if f == "0" {
			d, err = 0, nil
		}
		if err != nil || d < 0 {
			return fmt.Errorf("-rtts: %q is not a duration like 50ms", f)
		}
		h.rtts = append(h.rtts, d)
	}
	for _, f := range benchproc.SplitList(losses) {
		l, err := strconv.ParseFloat(f, 64)
		if err != nil || l < 0 || l > 1 {
			return fmt.Errorf("-losses: %q is not a fraction in 0..1 (0.01 = 1 %%)", f)
		}
		h.losses = append(h.losses, l)
	}
	for _, f := range benchproc.SplitList(dirs) {
		if f != "download" && f != "upload" {
			return fmt.Errorf("-dirs: %q is neither download nor upload", f)
		}
		h.dirs = append(h.dirs, f)
	}
	for _, f := range benchproc.SplitList(streams) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > maxStreams {
			return fmt.Errorf("-streams: %q is not a count in 1..%d", f, maxStreams)
		}
		h.streams = append(h.streams, n)
	}
	return nil
}

// parseTransports parses -transports.
func (h *harness) parseTransports(list string) error {
	h.transports = nil
	for _, f := range benchproc.SplitList(list) {
		if f != udp && f != websocket {
			return fmt.Errorf("-transports: %q is neither udp nor websocket", f)
		}
		for _, t := range h.transports {
			if t == f {
				return fmt.Errorf("-transports: %s named twice", f)
			}
		}
		h.transports = append(h.transports, f)
	}
	if len(h.transports) == 0 {
		return fmt.Errorf("-transports: none given (udp, websocket)")
	}
	return nil
}

// binsFor is who runs in a cell over transport: every binary over UDP;
// over WebSocket the sidecars only (the stock forwarder has no WebSocket
// mode).
func (h *harness) binsFor(transport string) []binary {
	if transport == udp {
		return h.bins
	}
	var out []binary
	for _, b := range h.bins {
		if b.name != base {
			out = append(out, b)
		}
	}
	return out
}

// How the WebSocket's TCP crosses the emulated link (-ws-path).
const (
	pathPacket = "packet"
	pathStream = "stream"
)

// notMeasured says why a cell is left out over transport, "" if it is not.
func notMeasured(transport, wsPath string, loss float64) string {
	if transport == websocket && wsPath == pathStream && loss > 0 {
		return "the stream relay cannot lose packets (a byte stream has none; loss on a real path is of the IP packets under the WebSocket's TCP)"
	}
	return ""
}

func (h *harness) warmup(rtt time.Duration) time.Duration {
	w := max(h.dur/6, 10*rtt)
	return min(w, h.dur/2)
}

func (h *harness) run(ns, ifName string) (*Report, error) {
	start := time.Now()
	host, _ := os.Hostname()
	rep := &Report{When: start.UTC().Format(time.RFC3339), Host: fmt.Sprintf("%s, %s, %d CPUs", host, runtime.Version(), runtime.NumCPU()),
		LoadBefore: loadavg(), Quick: h.quick, Duration: h.dur.Seconds(), Warmup: h.warmup(0).Seconds()}
	rep.SidecarEnv = h.sidecarEnv
	rep.Transports = h.transports
	rep.WSPath = h.wsPath
	for k, v := range nsSysctls {
		rep.Sysctls = append(rep.Sysctls, k+"="+v)
	}
	sort.Strings(rep.Sysctls)
	rep.GatewayCC = h.gatewayCC

	srv, err := flyapitest.NewServer(flyapitest.Options{NoGateway: true})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	h.gw, err = newKernelGateway(ns, ifName, h.gatewayCC, srv, org)
	if err != nil {
		return nil, err
	}
	defer h.gw.close()
	gwAddr := netipLoopback(h.gw.port)
	h.relay, err = startRelay(gwAddr, netipLoopback(h.gw.wsPort), ns, ifName)
	if err != nil {
		return nil, err
	}
	defer h.relay.close()
	if h.dir, err = os.MkdirTemp(h.workdir, "bench-wan"); err != nil {
		return nil, err
	}
	defer os.RemoveAll(h.dir)
	if err := h.makePeers(srv); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	plainURL, err := h.gw.plainServer(ctx)
	if err != nil {
		return nil, err
	}
	if pl, err := smallRequests(keepAliveClient(), plainURL, 500); err == nil {
		rep.PlainP50us, rep.PlainP99us = benchproc.PercentileMicros(pl, .5), benchproc.PercentileMicros(pl, .99)
	} else {
		return nil, fmt.Errorf("plain requests: %w", err)
	}

	rtts, losses, dirs, streams := h.matrix()
	seed := int64(1)
	for _, rtt := range rtts {
		rate := h.rate
		if rtt == 0 {
			rate = 0
		}
		for _, loss := range losses {
			for _, dir := range dirs {
				for _, n := range streams {
					seed++
					// The transports one after the other in the same cell:
					// WebSocket and UDP ratios under the same load.
					for _, tr := range h.transports {
						sp := spec{Transport: tr, RTT: rtt, Loss: loss, Dir: dir, Streams: n, Rate: rate}
						if why := notMeasured(tr, h.wsPath, loss); why != "" {
							rep.NotMeasured = append(rep.NotMeasured, fmt.Sprintf("%s, %s, loss %s, %s ×%d: %s", tr, rttName(float64(rtt)/1e6), lossName(loss), dir, n, why))
							continue
						}
						bins := h.binsFor(tr)
						// Rotate who goes first, against drift in the machine's load.
						r := int(seed) % len(bins)
						order := append(append([]binary(nil), bins[r:]...), bins[:r]...)
						for _, b := range order {
							c, err := h.cell(b, sp, seed)
							if err != nil {
								return nil, fmt.Errorf("%s over %s, %v RTT, loss %g, %s × %d: %w", b.name, tr, rtt, loss, dir, n, err)
							}
							fmt.Fprintf(os.Stderr, "  %-15s %-9s rtt %3.0f ms loss %5.2f%% %-8s ×%-3d %7.1f Mbit/s (bound %6.1f) cpu %5.2f s/GiB rss %5.1f MiB win %7d B stalled %d udp drops %d (system %d)\n",
								c.Binary, c.Transport, c.RTTms, c.Loss*100, c.Dir, c.Streams, c.Mbps, c.BoundMbps, c.CPUPerGiB, c.PeakRSSMiB, c.WindowBytes, c.Stalled, c.PathDrops, c.RcvbufErrors)
							rep.Cells = append(rep.Cells, c)
						}
					}
				}
			}
		}
		// Small requests at this RTT, no loss.
		if err := h.setLink(spec{RTT: rtt, Rate: rate}, 1); err != nil {
			return nil, err
		}
		for _, tr := range h.transports {
			for _, b := range h.binsFor(tr) {
				l, err := h.latency(b, tr, rtt)
				if err != nil {
					return nil, fmt.Errorf("%s over %s small requests at %v: %w", b.name, tr, rtt, err)
				}
				fmt.Fprintf(os.Stderr, "  %-15s %-9s rtt %3.0f ms keep-alive GET p50 %.0f µs p99 %.0f µs\n", b.name, tr, l.RTTms, l.P50us, l.P99us)
				rep.Latency = append(rep.Latency, l)
			}
		}
	}
	if !h.quick && h.rtts == nil {
		// Many parallel streams (memory and stalls), 50 ms, no loss.
		sp := spec{Transport: udp, RTT: 50 * time.Millisecond, Dir: "download", Streams: 100, Rate: h.rate}
		for _, b := range h.bins {
			c, err := h.cell(b, sp, 99)
			if err != nil {
				return nil, fmt.Errorf("%s, 100 streams: %w", b.name, err)
			}
			fmt.Fprintf(os.Stderr, "  %-15s rtt 50 ms download ×100 %7.1f Mbit/s rss %5.1f MiB stalled %d\n", c.Binary, c.Mbps, c.PeakRSSMiB, c.Stalled)
			rep.Cells = append(rep.Cells, c)
		}
	}
	rep.LoadAfter = loadavg()
	rep.Elapsed = time.Since(start).Seconds()
	return rep, nil
}

func (h *harness) makePeers(srv *flyapitest.Server) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := flyapi.New(flyapi.Options{BaseURL: srv.URL(), Token: srv.Token()})
	if err != nil {
		return err
	}
	o, err := c.Organization(ctx, org)
	if err != nil {
		return err
	}
	gwKey, err := wgquick.ParseKey(h.gw.PublicKey())
	if err != nil {
		return err
	}
	h.cfgs, h.cfgsPath = map[string]string{}, map[string]string{}
	for i, b := range h.bins {
		kp, err := wgquick.GenerateKeyPair()
		if err != nil {
			return err
		}
		created, err := c.AddPeer(ctx, flyapi.AddPeerInput{Org: *o, Name: fmt.Sprintf("k8s-bench-wan-%d-%d", os.Getpid(), i), PublicKey: kp.Public, Region: srv.Region()})
		if err != nil {
			return err
		}
		var st *flyapitest.PeerState
		for _, p := range srv.Peers(org) {
			if p.Name == created.Name {
				st = &p
			}
		}
		if st == nil {
			return fmt.Errorf("peer %s not in the double's state", created.Name)
		}
		if err := h.gw.addPeer(*st); err != nil {
			return err
		}
		// The double's answer names its own (disabled) gateway; the
		// benchmark's gateway has its own key, and the sidecar reaches it
		// through the link emulator.
		created.GatewayPublicKey = gwKey
		wc, err := flyapi.NewWireGuardConfig(kp.Private, *created, int(h.relay.Addr().Port()))
		if err != nil {
			return err
		}
		p := filepath.Join(h.dir, fmt.Sprintf("wg%d.conf", i))
		if err := os.WriteFile(p, wc.Render(), 0o600); err != nil {
			return err
		}
		h.cfgs[b.name] = p
		// Over the packet path the WebSocket's host is its far end (the
		// sidecar dials wss://<Endpoint host>:443/); UDP is not used there.
		wc.Endpoint = netip.AddrPortFrom(h.relay.pathAddr.Addr(), h.relay.Addr().Port()).String()
		p = filepath.Join(h.dir, fmt.Sprintf("wg%d-path.conf", i))
		if err := os.WriteFile(p, wc.Render(), 0o600); err != nil {
			return err
		}
		h.cfgsPath[b.name] = p
	}
	return nil
}

func (h *harness) setLink(sp spec, seed int64) error {
	p := link.Params{Delay: sp.RTT / 2, Loss: sp.Loss, RateBits: sp.Rate}
	up, down := p, p
	up.Seed, down.Seed = seed*2, seed*2+1
	return h.relay.Set(up, down)
}

func (h *harness) cell(b binary, sp spec, seed int64) (Cell, error) {
	c := Cell{Binary: b.name, Transport: sp.Transport, RTTms: float64(sp.RTT) / 1e6, Loss: sp.Loss, Dir: sp.Dir, Streams: sp.Streams, RateMbit: sp.Rate / 1e6}
	if sp.Streams > maxStreams {
		return c, fmt.Errorf("%d streams, more than %d", sp.Streams, maxStreams)
	}
	// Same seeds for both binaries: the same datagram numbers are lost.
	if err := h.setLink(sp, seed); err != nil {
		return c, err
	}
	p, ready, err := benchproc.Start(b.path, h.config(b, sp.Transport), h.env(b, sp.Transport))
	if err != nil {
		return c, err
	}
	defer p.Stop()
	c.ReadyMs = float64(ready.Microseconds()) / 1000
	// Statistics from here: the handshake and the first DNS lookups are
	// not part of the cell.
	if err := h.setLink(sp, seed); err != nil {
		return c, err
	}
	gen := h.gw.newGeneration()
	ws0 := h.gw.tr.WebSocketStats().DatagramsIn
	rcv0 := udpRcvbufErrors()
	pathPids := []int{os.Getpid(), h.relay.cmd.Process.Pid, p.Pid()}
	drops0 := udpDrops(pathPids...)

	var rssMax, anonMax, fileMax atomic.Int64
	stopSampling := make(chan struct{})
	var sampled sync.WaitGroup
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		for {
			h.gw.sampleConns()
			if st, err := benchproc.ReadMemory(p.Pid()); err == nil {
				storeMax(&rssMax, st.HWMKiB)
				storeMax(&anonMax, st.AnonKiB)
				storeMax(&fileMax, st.FileKiB)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	counts := make([]atomic.Int64, sp.Streams)
	errs := make(chan error, sp.Streams)
	url := "http://" + p.Listen
	for i := range counts {
		go func() { errs <- stream(ctx, sp.Dir, url, i, &counts[i]) }()
	}
	total := func() (n int64, per []int64) {
		for i := range counts {
			v := counts[i].Load()
			per = append(per, v)
			n += v
		}
		if sp.Dir == "upload" {
			// What arrived, not what the client handed to its socket.
			n, per = 0, per[:0]
			for i := range counts {
				v := h.gw.perStream[i].Load()
				per = append(per, v)
				n += v
			}
		}
		return
	}
	warm := h.warmup(sp.RTT)
	time.Sleep(warm)
	b0, per0 := total()
	cpu0, _ := benchproc.CPUSeconds(p.Pid())
	t0 := time.Now()
	time.Sleep(h.dur - warm)
	b1, per1 := total()
	cpu1, _ := benchproc.CPUSeconds(p.Pid())
	el := time.Since(t0)
	h.gw.sampleConns()
	snd, rcv, minRTT, retrans, _ := h.gw.windows(gen)
	c.PathDrops = udpDrops(pathPids...) - drops0
	cancel()
	for range counts {
		if err := <-errs; err != nil && ctx.Err() == nil {
			close(stopSampling)
			return c, err
		}
	}
	close(stopSampling)
	sampled.Wait()

	c.Bytes, c.Seconds = b1-b0, el.Seconds()
	c.Mbps = float64(c.Bytes) * 8 / el.Seconds() / 1e6
	if c.Bytes > 0 {
		c.CPUPerGiB = (cpu1 - cpu0) / (float64(c.Bytes) / (1 << 30))
	}
	c.PeakRSSMiB = benchproc.MiB(rssMax.Load())
	c.PeakAnonMiB, c.FileMiB = benchproc.MiB(anonMax.Load()), benchproc.MiB(fileMax.Load())
	c.WindowBytes = snd
	if sp.Dir == "upload" {
		c.WindowBytes = rcv
	}
	c.BoundMbps = sp.Rate / 1e6
	if sp.RTT > 0 {
		w := float64(c.WindowBytes) * 8 / sp.RTT.Seconds() / 1e6
		if c.BoundMbps == 0 || w < c.BoundMbps {
			c.BoundMbps = w
		}
	}
	c.Retrans = retrans
	if minRTT > 0 {
		c.KernelMinRTT = float64(minRTT) / 1e6
	}
	for i := range per0 {
		if per1[i] == per0[i] {
			c.Stalled++
		}
	}
	c.RcvbufErrors = udpRcvbufErrors() - rcv0
	st, err := h.relay.Stats()
	if err != nil {
		return c, err
	}
	c.LinkUp, c.LinkDown = st.Up, st.Down
	switch {
	case sp.Transport == websocket && h.wsPath == pathStream:
		c.LinkUp, c.LinkDown = st.StreamUp, st.StreamDown
		c.StreamWaits = st.StreamWaitsUp + st.StreamWaitsDown
	case sp.Transport == websocket:
		c.LinkUp, c.LinkDown = st.PathUp, st.PathDown
		if st.PathUp.Delivered == 0 || st.PathDown.Delivered == 0 {
			return c, fmt.Errorf("a websocket cell over the packet path, but the path carried %d packets up and %d down", st.PathUp.Delivered, st.PathDown.Delivered)
		}
	}
	c.WSDatagrams = int64(h.gw.tr.WebSocketStats().DatagramsIn - ws0)
	// Each cell must have used the transport it is filed under.
	if (sp.Transport == websocket) != (c.WSDatagrams > 0) {
		return c, fmt.Errorf("a %s cell, but the gateway received %d datagrams over WebSockets", sp.Transport, c.WSDatagrams)
	}
	return c, nil
}

// downloadBytes is what each download stream asks for.
const downloadBytes = 4 << 30

// stream runs one download or upload until ctx ends, counting the bytes it
// read (download) or handed to the connection (upload).
func stream(ctx context.Context, dir, url string, i int, n *atomic.Int64) error {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true,
		ReadBufferSize: 256 << 10, WriteBufferSize: 256 << 10}}
	var req *http.Request
	if dir == "download" {
		// More than any cell moves, within the sample app's 8 GiB bound.
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, url+"/bytes?n="+strconv.FormatInt(downloadBytes, 10), nil)
	} else {
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, url+"/discard", &endless{ctx: ctx, n: n})
		req.Header.Set("X-Bench-Stream", strconv.Itoa(i))
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// A refused request would otherwise look like a stalled stream.
		return fmt.Errorf("stream %d: %s %s: status %s", i, req.Method, req.URL.Path, resp.Status)
	}
	if dir == "upload" {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	buf := make([]byte, 256<<10)
	for {
		k, err := resp.Body.Read(buf)
		n.Add(int64(k))
		if err != nil {
			return err
		}
	}
}

// endless is an upload body that lasts until ctx ends.
type endless struct {
	ctx context.Context
	n   *atomic.Int64
}

func (e *endless) Read(p []byte) (int, error) {
	if e.ctx.Err() != nil {
		return 0, io.EOF
	}
	k := 0
	for k < len(p) {
		k += copy(p[k:], flyapitest.BytesPattern())
	}
	e.n.Add(int64(k))
	return k, nil
}

func (h *harness) latency(b binary, transport string, rtt time.Duration) (Latency, error) {
	p, _, err := benchproc.Start(b.path, h.config(b, transport), h.env(b, transport))
	if err != nil {
		return Latency{}, err
	}
	defer p.Stop()
	n := 500
	if rtt > 0 {
		n = int(min(100, 6*time.Second/rtt))
		if h.quick {
			n = int(min(40, 2*time.Second/rtt))
		}
	}
	cl := keepAliveClient()
	url := "http://" + p.Listen
	if _, err := smallRequests(cl, url, 5); err != nil {
		return Latency{}, err
	}
	d, err := smallRequests(cl, url, n)
	if err != nil {
		return Latency{}, err
	}
	return Latency{Binary: b.name, Transport: transport, RTTms: float64(rtt) / 1e6, N: n, P50us: benchproc.PercentileMicros(d, .5), P99us: benchproc.PercentileMicros(d, .99)}, nil
}

func keepAliveClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
}

func smallRequests(client *http.Client, url string, n int) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		resp, err := client.Get(url + "/")
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return nil, fmt.Errorf("request %d: status %d, %v", i, resp.StatusCode, err)
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

// config is a binary's wg-quick file over transport: over WebSocket on the
// packet path its Endpoint host is the path's far end.
func (h *harness) config(b binary, transport string) string {
	if transport == websocket && h.wsPath == pathPacket {
		return h.cfgsPath[b.name]
	}
	return h.cfgs[b.name]
}

// env is a binary's environment over transport: -env for the sidecar
// under test, and for every sidecar the transport, fixed (never auto, so
// that a cell measures the path it is filed under). Over WebSocket on the
// stream relay, its port stands in for 443 and the host is the wg-quick
// Endpoint's, 127.0.0.1; on the packet path the port is 443 on the far
// end (config).
func (h *harness) env(b binary, transport string) []string {
	var env []string
	if b.name == h.bins[0].name {
		env = append(env, h.sidecarEnv...)
	}
	if b.name == base {
		return env
	}
	env = append(env, "GLACEON_TRANSPORT="+transport)
	switch {
	case transport == websocket && h.wsPath == pathStream:
		env = append(env, "FLY_WG_WEBSOCKET_PORT="+strconv.Itoa(int(h.relay.streamAddr.Port())))
	case transport == websocket:
		env = append(env, "FLY_WG_WEBSOCKET_PORT="+strconv.Itoa(int(h.relay.pathAddr.Port())))
	}
	return env
}

// --- the kernel's counters ---

// udpDrops sums the drop counters (/proc/net/udp{,6}, last column) of the
// UDP sockets the given processes hold: the datagrams lost to full receive
// buffers on this path alone, whatever else the shared machine runs.
func udpDrops(pids ...int) int64 {
	inodes := map[string]bool{}
	for _, pid := range pids {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if ino, ok := strings.CutPrefix(l, "socket:["); err == nil && ok {
				inodes[strings.TrimSuffix(ino, "]")] = true
			}
		}
	}
	var total int64
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n") {
			fl := strings.Fields(line)
			if len(fl) >= 13 && inodes[fl[9]] {
				v, _ := strconv.ParseInt(fl[len(fl)-1], 10, 64)
				total += v
			}
		}
	}
	return total
}

// udpRcvbufErrors is the system's UDP (v4 + v6) RcvbufErrors counter: a
// datagram dropped because a socket's receive buffer was full. It must not
// move during a cell, or the numbers measure the machine, not the link.
func udpRcvbufErrors() int64 {
	var total int64
	if b, err := os.ReadFile("/proc/net/snmp"); err == nil {
		var hdr []string
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, "Udp: ") {
				continue
			}
			f := strings.Fields(line)
			if hdr == nil {
				hdr = f
				continue
			}
			for i, k := range hdr {
				if k == "RcvbufErrors" && i < len(f) {
					v, _ := strconv.ParseInt(f[i], 10, 64)
					total += v
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/net/snmp6"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "Udp6RcvbufErrors" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				total += v
			}
		}
	}
	return total
}

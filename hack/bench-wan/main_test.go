package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgws"
	"github.com/glaceon/glaceon/hack/bench-wan/link"
)

func TestOverrides(t *testing.T) {
	h := &harness{}
	if err := h.overrides("0, 10ms,100ms", "0,0.001", "upload", "1,100"); err != nil {
		t.Fatal(err)
	}
	rtts, losses, dirs, streams := h.matrix()
	if len(rtts) != 3 || rtts[0] != 0 || rtts[2] != 100*time.Millisecond || len(losses) != 2 || losses[1] != 0.001 ||
		len(dirs) != 1 || dirs[0] != "upload" || len(streams) != 2 || streams[1] != 100 {
		t.Fatalf("matrix %v %v %v %v", rtts, losses, dirs, streams)
	}
	for _, bad := range [][4]string{
		{"50", "", "", ""}, {"-1ms", "", "", ""}, {"", "2", "", ""}, {"", "x", "", ""},
		{"", "", "sideways", ""}, {"", "", "", "0"}, {"", "", "", "1000"},
	} {
		h := &harness{}
		err := h.overrides(bad[0], bad[1], bad[2], bad[3])
		if err == nil {
			t.Errorf("%q accepted", bad)
			continue
		}
		if !strings.HasPrefix(err.Error(), "-") {
			t.Errorf("%q: error %q does not name the flag", bad, err)
		}
	}
	// Without overrides: the full matrix, or the quick one.
	full, _, _, _ := (&harness{}).matrix()
	quick, ql, _, _ := (&harness{quick: true}).matrix()
	if len(full) != 4 || len(quick) != 2 || len(ql) != 2 {
		t.Fatalf("default matrix: %v, quick %v × %v", full, quick, ql)
	}
}

// TestReport checks the targets against a hand-made run: the verdicts
// follow the numbers.
func TestReport(t *testing.T) {
	cell := func(bin string, rtt float64, loss float64, dir string, n int, mbps, cpu, rss float64) Cell {
		return Cell{Binary: bin, RTTms: rtt, Loss: loss, Dir: dir, Streams: n, Mbps: mbps, CPUPerGiB: cpu, PeakRSSMiB: rss, RateMbit: map[bool]float64{true: 0, false: 200}[rtt == 0]}
	}
	rep := &Report{PlainP50us: 20, Cells: []Cell{
		cell(side, 0, 0, "download", 1, 900, 3, 20), cell(base, 0, 0, "download", 1, 300, 9.3, 100),
		cell(side, 50, 0, "download", 1, 170, 10, 22), cell(base, 50, 0, "download", 1, 100, 20, 90),
		cell(side, 50, 0.01, "download", 1, 100, 10, 22), cell(base, 50, 0.01, "download", 1, 40, 20, 90),
	}, Latency: []Latency{{Binary: side, RTTms: 0, P50us: 90}, {Binary: base, RTTms: 0, P50us: 100}}}
	// The resident set's parts: the sidecar's largest of each, never the
	// stock forwarder's.
	rep.Cells[0].PeakAnonMiB, rep.Cells[0].FileMiB = 9.5, 11.2
	rep.Cells[2].PeakAnonMiB, rep.Cells[2].FileMiB = 12.5, 11.0
	rep.Cells[1].PeakAnonMiB, rep.Cells[1].FileMiB = 80, 9
	var b bytes.Buffer
	printReport(&b, rep)
	out := b.String()
	for _, want := range []string{
		"loss-free single stream ≥ 0.80 of the cap: lowest 0.85 (50 ms download): met",
		"never slower than the stock forwarder: lowest ratio 1.70 (50 ms, loss 0, download ×1), 0 of 3 cells slower: met",
		"lossy cells ≥ 2× the stock forwarder: lowest ratio 2.50",
		"in 1 of 1 lossy cells the stock forwarder moves at least half the loss estimate",
		"| 50 ms | 1 % | download | 1 | udp | 100.0 | 40.0 | 2.50 | — / — | 2.6 |",
		"CPU s/GiB ≤ 1/3 of the stock forwarder's: 3.00 / 9.30 = 0.32: met",
		"keep-alive p50 ≤ 5× plain loopback: 90 / 20 µs = 4.5×: met",
		"highest 22.0 MiB (50 ms, loss 0, download): met",
		"at most 12.5 MiB anonymous (what one more pod costs) and 11.2 MiB file-backed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	rep.Cells[2].Mbps = 90 // 0.45 of the cap
	b.Reset()
	printReport(&b, rep)
	if !strings.Contains(b.String(), "lowest 0.45 (50 ms download): NOT met") {
		t.Errorf("a slow cell is not reported:\n%s", b.String())
	}
	if svg := plotSVG(rep); !bytes.HasPrefix(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("polyline")) {
		t.Error("no plot drawn")
	}
}

func TestTransports(t *testing.T) {
	h := &harness{bins: []binary{{side, "s"}, {base, "v"}, {prev, "p"}}}
	if err := h.parseTransports("udp, websocket"); err != nil || len(h.transports) != 2 {
		t.Fatalf("transports %v, %v", h.transports, err)
	}
	for _, bad := range []string{"", "tcp", "udp,udp"} {
		if err := h.parseTransports(bad); err == nil || !strings.HasPrefix(err.Error(), "-transports") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if got := h.binsFor(udp); len(got) != 3 {
		t.Fatalf("udp cells run %v", got)
	}
	for _, b := range h.binsFor(websocket) {
		if b.name == base {
			t.Fatal("the stock forwarder, which has no WebSocket mode, runs in a websocket cell")
		}
	}
	if notMeasured(websocket, pathStream, 0.001) == "" || notMeasured(websocket, pathStream, 0) != "" || notMeasured(udp, pathStream, 0.01) != "" {
		t.Fatal("on the stream relay, only lossy websocket cells are left out")
	}
	if notMeasured(websocket, pathPacket, 0.01) != "" {
		t.Fatal("on the packet path, lossy websocket cells are left out")
	}
}

// TestReportWebSocket: websocket cells are compared with the UDP run of
// the same cell, kept out of the UDP targets, and what was not measured
// is listed.
func TestReportWebSocket(t *testing.T) {
	cell := func(bin, tr string, loss float64, mbps, cpu, minRTT float64) Cell {
		return Cell{Binary: bin, Transport: tr, RTTms: 50, Loss: loss, Dir: "download", Streams: 1, Mbps: mbps, CPUPerGiB: cpu, RateMbit: 200, KernelMinRTT: minRTT}
	}
	rep := &Report{PlainP50us: 20, Cells: []Cell{
		cell(side, udp, 0, 170, 10, 50.5), cell(base, udp, 0, 100, 20, 50.6),
		cell(side, websocket, 0, 85, 15, 51),
		cell(side, "", 0.01, 100, 10, 0), cell(base, "", 0.01, 40, 20, 0), // a run from before: UDP
		{Binary: side, Transport: websocket, RTTms: 0, Dir: "download", Streams: 1, Mbps: 900, KernelMinRTT: 1},
	},
		Latency:     []Latency{{Binary: side, Transport: udp, RTTms: 50, P50us: 51000}, {Binary: side, Transport: websocket, RTTms: 50, P50us: 52000}},
		NotMeasured: []string{"websocket, 50 ms, loss 1 %, download ×1: the stream relay cannot lose packets"},
	}
	var b bytes.Buffer
	printReport(&b, rep)
	out := b.String()
	for _, want := range []string{
		"| 50 ms | 0 | download | 1 | 85.0 | 170.0 | 0.50 | 100.0 | 0.85 | 15.00 / 10.00 (1.50) |",
		"| 50 ms | 0 | download | 1 | websocket | 85.0 | 100.0 | 0.85 |",
		"| 50 ms | 52000 / 0 µs | 51000 / 0 µs | 1.02 | 51.00 ms | min RTT / RTT = 1.020; (min RTT − loopback's) / RTT = 1.000 |",
		"Not measured (1 cells):\n- websocket, 50 ms, loss 1 %",
		// The UDP target sees 170 / 200, not the websocket cell's 85.
		"loss-free single stream ≥ 0.80 of the cap: lowest 0.85 (50 ms download): met",
		"0 of 2 cells slower: met",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if svg := plotSVG(rep); !bytes.Contains(svg, []byte("over WebSocket")) || !bytes.Contains(svg, []byte(`stroke-dasharray="1,3"`)) {
		t.Error("no WebSocket series in the plot")
	}
}

// TestWebSocketThroughStreamRelay: a client dialling the gateway's
// WebSocket through the stream relay, as the sidecar does in a websocket
// cell on -ws-path stream, is accepted (Origin and Host name the relay's
// address, which the gateway checks against each other) and its datagrams
// arrive.
func TestWebSocketThroughStreamRelay(t *testing.T) {
	tr, fns := gatewayTransport(t)
	r, err := link.NewStreamRelay(netipLoopback(tr.WebSocketPort()), link.Params{Delay: 5 * time.Millisecond}, link.Params{Delay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	datagramArrives(t, tr, fns, wgws.GatewayURL("127.0.0.1", int(r.Addr().Port())))
	if up, _ := r.Stats(); up.OfferedBytes == 0 {
		t.Fatal("the relay saw nothing")
	}
}

// TestWebSocketThroughPacketPath: the same over the packet path (the
// default -ws-path), as the emulator process sets it up: wss to the far
// end's port 443 in another namespace, whose splice joins the gateway's
// WebSocket on loopback. Needs root.
func TestWebSocketThroughPacketPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the packet path test needs root to create TUN devices and a network namespace")
	}
	pid := os.Getpid()
	// The prefix of the link package's test, whose run removes what a
	// killed test left.
	ns, dev := fmt.Sprintf("glaceon-link-%d", pid), fmt.Sprintf("gllk%d", pid)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	tr, fns := gatewayTransport(t)
	path, ln, err := startWSPath(ns, dev, netipLoopback(tr.WebSocketPort()), link.Params{Delay: 5 * time.Millisecond}, link.Params{Delay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer path.Close()
	defer ln.Close()
	datagramArrives(t, tr, fns, wgws.GatewayURL(path.Far.String(), wsPathPort))
	if up, down := path.Stats(); up.Delivered == 0 || down.Delivered == 0 {
		t.Fatalf("the path carried %d packets up and %d down", up.Delivered, down.Delivered)
	}
}

// gatewayTransport is the double gateway's transport with its bind open
// (datagrams are taken only then), closed when the test ends.
func gatewayTransport(t *testing.T) (*flyapitest.GatewayTransport, []conn.ReceiveFunc) {
	t.Helper()
	tr, err := flyapitest.NewGatewayTransport()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	fns, _, err := tr.Bind().Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Bind().Close() })
	return tr, fns
}

// datagramArrives dials the gateway's WebSocket at url, sends a datagram
// and waits for the gateway's bind to receive it.
func datagramArrives(t *testing.T, tr *flyapitest.GatewayTransport, fns []conn.ReceiveFunc, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := wgws.Dial(ctx, wgws.DialOptions{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := []byte("a WireGuard datagram, more or less")
	if err := c.WriteDatagram(msg); err != nil {
		t.Fatal(err)
	}
	// The bind's last receive function is the WebSockets'.
	got := make(chan string, 1)
	go func() {
		bufs, sizes, eps := [][]byte{make([]byte, 2048)}, make([]int, 1), make([]conn.Endpoint, 1)
		if n, err := fns[len(fns)-1](bufs, sizes, eps); err == nil && n == 1 {
			got <- string(bufs[0][:sizes[0]])
		}
		close(got)
	}()
	select {
	case g := <-got:
		if g != string(msg) {
			t.Fatalf("gateway received %q, want %q", g, msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no datagram arrived: %+v", tr.WebSocketStats())
	}
	if st := tr.WebSocketStats(); st.Accepted != 1 || st.Rejected != 0 {
		t.Fatalf("gateway stats %+v", st)
	}
}

// The Linux side's congestion control is pinned, and a name this kernel
// lacks is refused with the flag's name and the choices.
func TestGatewayCC(t *testing.T) {
	h := &harness{}
	if err := h.setGatewayCC("reno"); err != nil {
		t.Fatal(err)
	}
	if got := h.gatewayCC; got != "reno" {
		t.Fatalf("congestion control %q, want reno", got)
	}
	err := h.setGatewayCC("nosuch")
	if err == nil || !strings.Contains(err.Error(), "-gateway-cc") || !strings.Contains(err.Error(), "reno") {
		t.Fatalf("err %v, want one naming -gateway-cc and the available choices", err)
	}
}

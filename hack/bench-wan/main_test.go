package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
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
	var b bytes.Buffer
	printReport(&b, rep)
	out := b.String()
	for _, want := range []string{
		"loss-free single stream ≥ 0.80 of the cap: lowest 0.85 (50 ms download): met",
		"never slower than the stock forwarder: lowest ratio 1.70 (50 ms, loss 0, download ×1), 0 of 3 cells slower: met",
		"lossy cells ≥ 2× the stock forwarder: lowest ratio 2.50",
		"CPU s/GiB ≤ 1/3 of the stock forwarder's: 3.00 / 9.30 = 0.32: met",
		"keep-alive p50 ≤ 5× plain loopback: 90 / 20 µs = 4.5×: met",
		"highest 22.0 MiB (50 ms, loss 0, download): met",
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

package main

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/glaceon/glaceon/hack/bench-wan/link"
)

func netipLoopback(port int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
}

const (
	side = "glaceon-sidecar"
	base = "vanilla"
	// prev is the optional second sidecar (-before), e.g. main's build.
	prev = "sidecar-before"
)

type cellKey struct {
	rtt, loss float64
	dir       string
	streams   int
	transport string
}

// transportOf is a cell's transport; runs from before the WebSocket was
// measured have none, and were UDP.
func transportOf(t string) string {
	if t == "" {
		return udp
	}
	return t
}

func keyOf(c Cell) cellKey {
	return cellKey{c.RTTms, c.Loss, c.Dir, c.Streams, transportOf(c.Transport)}
}

// over is the same matrix position over another transport.
func (k cellKey) over(t string) cellKey { k.transport = t; return k }

// pairs groups the cells by matrix position, in run order.
func pairs(rep *Report) ([]cellKey, map[cellKey]map[string]Cell) {
	var keys []cellKey
	m := map[cellKey]map[string]Cell{}
	for _, c := range rep.Cells {
		k := keyOf(c)
		if m[k] == nil {
			m[k] = map[string]Cell{}
			keys = append(keys, k)
		}
		m[k][c.Binary] = c
	}
	return keys, m
}

func rttName(ms float64) string {
	if ms == 0 {
		return "loopback"
	}
	return fmt.Sprintf("%.0f ms", ms)
}

func lossName(l float64) string {
	if l == 0 {
		return "0"
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", l*100), "0"), ".") + " %"
}

func ratio(a, b float64) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func bound(c Cell) string {
	if c.BoundMbps == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f", c.BoundMbps)
}

// tunnelMSS is one TCP segment's payload in the benchmark's tunnel: the
// WireGuard MTU of 1420 less the IPv6 (40) and TCP (20) headers and the
// timestamp option (12).
const tunnelMSS = 1348

// lossEstimateMbps is the rate a Reno-like sender settles at under random
// loss (Mathis et al. 1997: MSS·√(3/2) ÷ (RTT·√loss) per stream) for the
// cell's streams, RTT (the configured one, or the path's own where that is
// longer) and loss; 0 without loss or a known RTT. It is an estimate of what
// a standard TCP reaches, not a bound: SACK, CUBIC and where the losses
// fall move it by tens of per cent either way.
func lossEstimateMbps(c Cell) float64 {
	rtt := math.Max(c.RTTms, c.KernelMinRTT) / 1000
	if c.Loss <= 0 || rtt <= 0 {
		return 0
	}
	return float64(c.Streams) * tunnelMSS * 8 * math.Sqrt(1.5) / (rtt * math.Sqrt(c.Loss)) / 1e6
}

func lossEstimate(c Cell) string {
	if e := lossEstimateMbps(c); e > 0 {
		return fmt.Sprintf("%.1f", e)
	}
	return "—"
}

func printReport(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "\n# bench-wan %s (%s), load before %s, after %s; %.0f s per cell (first %.1f s not counted), %.0f s in all\n",
		rep.When, rep.Host, rep.LoadBefore, rep.LoadAfter, rep.Duration, rep.Warmup, rep.Elapsed)
	linux := strings.Join(rep.Sysctls, ", ")
	if rep.GatewayCC != "" {
		linux += ", congestion control " + rep.GatewayCC + " (the apps' sockets)"
	}
	fmt.Fprintf(w, "# Linux side: %s\n", linux)
	if len(rep.SidecarEnv) > 0 {
		fmt.Fprintf(w, "# glaceon-sidecar environment: %s\n", strings.Join(rep.SidecarEnv, " "))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "The stock forwarder has no WebSocket mode: its columns are always its UDP run of the same cell.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| RTT | loss | dir | streams | sidecar transport | sidecar Mbit/s | stock Mbit/s (UDP) | ratio | bound s / st (Mbit/s) | loss estimate (Mbit/s) | CPU s/GiB s / st | peak RSS MiB s / st | window KiB s / st | stalled s / st | UDP drops s / st (system) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	keys, m := pairs(rep)
	for _, k := range keys {
		s, v := m[k][side], m[k.over(udp)][base]
		fmt.Fprintf(w, "| %s | %s | %s | %d | %s | %.1f | %.1f | %s | %s / %s | %s | %.2f / %.2f | %.1f / %.1f | %d / %d | %d / %d | %d / %d (%d / %d) |\n",
			rttName(k.rtt), lossName(k.loss), k.dir, k.streams, k.transport, s.Mbps, v.Mbps, ratio(s.Mbps, v.Mbps),
			bound(s), bound(v), lossEstimate(v), s.CPUPerGiB, v.CPUPerGiB, s.PeakRSSMiB, v.PeakRSSMiB,
			s.WindowBytes>>10, v.WindowBytes>>10, s.Stalled, v.Stalled, s.PathDrops, v.PathDrops, s.RcvbufErrors, v.RcvbufErrors)
	}
	fmt.Fprintln(w)
	printWebSocket(w, rep, keys, m)
	if hasBinary(rep, prev) {
		fmt.Fprintln(w, "Against the sidecar before the change (-before), same run:")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| RTT | loss | dir | streams | transport | after Mbit/s | before Mbit/s | after ÷ before | after ÷ stock (UDP) | before ÷ stock (UDP) | CPU s/GiB after / before | peak RSS MiB after / before | window KiB after / before | stalled after / before |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
		for _, k := range keys {
			s, p, v := m[k][side], m[k][prev], m[k.over(udp)][base]
			fmt.Fprintf(w, "| %s | %s | %s | %d | %s | %.1f | %.1f | %s | %s | %s | %.2f / %.2f | %.1f / %.1f | %d / %d | %d / %d |\n",
				rttName(k.rtt), lossName(k.loss), k.dir, k.streams, k.transport, s.Mbps, p.Mbps, ratio(s.Mbps, p.Mbps), ratio(s.Mbps, v.Mbps), ratio(p.Mbps, v.Mbps),
				s.CPUPerGiB, p.CPUPerGiB, s.PeakRSSMiB, p.PeakRSSMiB, s.WindowBytes>>10, p.WindowBytes>>10, s.Stalled, p.Stalled)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Small requests (one keep-alive connection, GET /, no loss); plain loopback TCP: p50 %.0f µs, p99 %.0f µs\n\n", rep.PlainP50us, rep.PlainP99us)
	fmt.Fprintln(w, "| RTT | sidecar p50 / p99 | stock p50 / p99 | sidecar p50 − RTT | stock p50 − RTT | Linux min RTT (TCP_INFO) | RTT check |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	lat := map[float64]map[string]Latency{}
	var rtts []float64
	for _, l := range rep.Latency {
		if transportOf(l.Transport) != udp {
			continue
		}
		if lat[l.RTTms] == nil {
			lat[l.RTTms] = map[string]Latency{}
			rtts = append(rtts, l.RTTms)
		}
		lat[l.RTTms][l.Binary] = l
	}
	for _, r := range rtts {
		s, v := lat[r][side], lat[r][base]
		mr, check := rttCheck(rep, udp, r)
		fmt.Fprintf(w, "| %s | %.0f / %.0f µs | %.0f / %.0f µs | %.0f µs | %.0f µs | %s | %s |\n", rttName(r), s.P50us, s.P99us, v.P50us, v.P99us,
			s.P50us-r*1000, v.P50us-r*1000, mr, check)
	}
	fmt.Fprintln(w)
	if hasBinary(rep, prev) {
		fmt.Fprint(w, "Sidecar before the change (-before), p50 / p99:")
		for _, r := range rtts {
			p := lat[r][prev]
			fmt.Fprintf(w, " %s %.0f / %.0f µs;", rttName(r), p.P50us, p.P99us)
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w)
	}
	printTargets(w, rep, keys, m, lat, side)
	if hasBinary(rep, prev) {
		fmt.Fprintln(w)
		printTargets(w, rep, keys, m, lat, prev)
	}
	printChecks(w, rep)
}

func hasBinary(rep *Report, name string) bool {
	for _, c := range rep.Cells {
		if c.Binary == name {
			return true
		}
	}
	return false
}

// minRTT is the smallest RTT Linux measured (TCP_INFO) in the loss-free
// cells at configured RTT r over transport; +Inf if none.
func minRTT(rep *Report, transport string, r float64) float64 {
	min := math.Inf(1)
	for _, c := range rep.Cells {
		if c.RTTms == r && c.Loss == 0 && c.KernelMinRTT > 0 && transportOf(c.Transport) == transport {
			min = math.Min(min, c.KernelMinRTT)
		}
	}
	return min
}

// rttCheck compares the RTT Linux measured through the path of transport
// with the configured one: the measured min RTT, and the ratio with and
// without the path's own round trip (the loopback cells').
func rttCheck(rep *Report, transport string, r float64) (measured, check string) {
	mr := minRTT(rep, transport, r)
	if math.IsInf(mr, 1) {
		return "—", "—"
	}
	measured, check = fmt.Sprintf("%.2f ms", mr), "—"
	if r > 0 {
		check = fmt.Sprintf("min RTT / RTT = %.3f", mr/r)
		if b := minRTT(rep, transport, 0); !math.IsInf(b, 1) {
			check += fmt.Sprintf("; (min RTT − loopback's) / RTT = %.3f", (mr-b)/r)
		}
	}
	return measured, check
}

// printWebSocket compares the sidecar over WebSocket with the sidecar over
// UDP (and the stock forwarder over UDP) in the same cells, and lists the
// cells not measured.
func printWebSocket(w io.Writer, rep *Report, keys []cellKey, m map[cellKey]map[string]Cell) {
	hasWS := false
	for _, k := range keys {
		hasWS = hasWS || k.transport == websocket
	}
	if !hasWS && len(rep.NotMeasured) == 0 {
		return
	}
	onPackets := rep.WSPath == pathPacket
	how, last := "through the stream relay: same delay and rate cap, no loss", "relay waits (backpressure)"
	if onPackets {
		how, last = "with its TCP's IP packets on the same link: delay, rate cap, drop-tail queue and loss", "WS path drops: queue / loss"
	}
	fmt.Fprintf(w, "WireGuard over WebSocket (TLS, flyctl's framing) %s. The sidecar over WebSocket against the sidecar over UDP and the stock forwarder over UDP, same cell, same run:\n", how)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "| RTT | loss | dir | streams | sidecar WS Mbit/s | sidecar UDP Mbit/s | WS ÷ UDP | stock UDP Mbit/s | WS ÷ stock | CPU s/GiB WS / UDP (WS ÷ UDP) | peak RSS MiB WS / UDP | window KiB WS / UDP | stalled WS / UDP | %s |\n", last)
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, k := range keys {
		if k.transport != websocket {
			continue
		}
		ws, u, v := m[k][side], m[k.over(udp)][side], m[k.over(udp)][base]
		extra := strconv.FormatInt(ws.StreamWaits, 10)
		if onPackets {
			extra = fmt.Sprintf("%d / %d", ws.LinkUp.QueueDrops+ws.LinkDown.QueueDrops, ws.LinkUp.Lost+ws.LinkDown.Lost)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d | %.1f | %.1f | %s | %.1f | %s | %.2f / %.2f (%s) | %.1f / %.1f | %d / %d | %d / %d | %s |\n",
			rttName(k.rtt), lossName(k.loss), k.dir, k.streams, ws.Mbps, u.Mbps, ratio(ws.Mbps, u.Mbps), v.Mbps, ratio(ws.Mbps, v.Mbps),
			ws.CPUPerGiB, u.CPUPerGiB, ratio(ws.CPUPerGiB, u.CPUPerGiB), ws.PeakRSSMiB, u.PeakRSSMiB, ws.WindowBytes>>10, u.WindowBytes>>10, ws.Stalled, u.Stalled, extra)
	}
	fmt.Fprintln(w)
	var rtts []float64
	lat := map[float64]map[string]Latency{}
	for _, l := range rep.Latency {
		t := transportOf(l.Transport)
		if l.Binary != side {
			continue
		}
		if lat[l.RTTms] == nil {
			lat[l.RTTms] = map[string]Latency{}
			rtts = append(rtts, l.RTTms)
		}
		lat[l.RTTms][t] = l
	}
	fmt.Fprintln(w, "| RTT | sidecar WS p50 / p99 | sidecar UDP p50 / p99 | WS p50 ÷ UDP p50 | Linux min RTT over WS (TCP_INFO) | RTT check over WS |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range rtts {
		ws, ok := lat[r][websocket]
		if !ok {
			continue
		}
		u := lat[r][udp]
		mr, check := rttCheck(rep, websocket, r)
		fmt.Fprintf(w, "| %s | %.0f / %.0f µs | %.0f / %.0f µs | %s | %s | %s |\n", rttName(r), ws.P50us, ws.P99us, u.P50us, u.P99us, ratio(ws.P50us, u.P50us), mr, check)
	}
	fmt.Fprintln(w)
	if len(rep.NotMeasured) > 0 {
		fmt.Fprintf(w, "Not measured (%d cells):\n", len(rep.NotMeasured))
		for _, n := range rep.NotMeasured {
			fmt.Fprintf(w, "- %s\n", n)
		}
		fmt.Fprintln(w)
	}
}

// printTargets checks issue 17's targets for the sidecar binary side (the
// build under test or, with -before, the one before the change).
func printTargets(w io.Writer, rep *Report, keys []cellKey, m map[cellKey]map[string]Cell, lat map[float64]map[string]Latency, side string) {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Fprintf(w, "Targets (issue 17 part 4) for %s over UDP, as measured in this run:\n", side)
	fmt.Fprintln(w)
	var udpKeys []cellKey
	for _, k := range keys {
		if k.transport == udp {
			udpKeys = append(udpKeys, k)
		}
	}
	keys = udpKeys
	// 1: loss-free, RTT > 0, one stream, at ≥ 80 % of the cap.
	worst, worstAt := math.Inf(1), ""
	for _, k := range keys {
		s := m[k][side]
		if k.rtt > 0 && k.loss == 0 && k.streams == 1 && s.RateMbit > 0 {
			if r := s.Mbps / s.RateMbit; r < worst {
				worst, worstAt = r, fmt.Sprintf("%s %s", rttName(k.rtt), k.dir)
			}
		}
	}
	if !math.IsInf(worst, 1) {
		fmt.Fprintf(w, "- loss-free single stream ≥ 0.80 of the cap: lowest %.2f (%s): %s\n", worst, worstAt, verdict(worst >= 0.8))
	}
	// 2: never slower than the stock forwarder; lossy cells ≥ 2×.
	worst, worstAt = math.Inf(1), ""
	worstLossy, worstLossyAt := math.Inf(1), ""
	slower, compared, lossy, atEstimate := 0, 0, 0, 0
	for _, k := range keys {
		s, v := m[k][side], m[k][base]
		if v.Mbps == 0 || k.streams > 16 {
			continue
		}
		compared++
		r := s.Mbps / v.Mbps
		at := fmt.Sprintf("%s, loss %s, %s ×%d", rttName(k.rtt), lossName(k.loss), k.dir, k.streams)
		if r < 1 {
			slower++
		}
		if r < worst {
			worst, worstAt = r, at
		}
		if k.loss > 0 && r < worstLossy {
			worstLossy, worstLossyAt = r, at
		}
		if k.loss > 0 {
			lossy++
			// Twice a stock forwarder that is already at half the loss
			// estimate or more would be past what a standard TCP reaches.
			if e := lossEstimateMbps(v); e > 0 && 2*v.Mbps >= e {
				atEstimate++
			}
		}
	}
	fmt.Fprintf(w, "- never slower than the stock forwarder: lowest ratio %.2f (%s), %d of %d cells slower: %s\n", worst, worstAt, slower, compared, verdict(worst >= 1))
	if !math.IsInf(worstLossy, 1) {
		fmt.Fprintf(w, "- lossy cells ≥ 2× the stock forwarder: lowest ratio %.2f (%s): %s\n", worstLossy, worstLossyAt, verdict(worstLossy >= 2))
		fmt.Fprintf(w, "  in %d of %d lossy cells the stock forwarder moves at least half the loss estimate (MSS·√1.5 ÷ (RTT·√loss) per stream), so 2× it would beat a standard TCP's loss response\n", atEstimate, lossy)
	}
	// 3: loopback CPU and keep-alive latency.
	for _, dir := range []string{"download", "upload"} {
		if x, ok := m[cellKey{0, 0, dir, 1, udp}]; ok {
			s, v := x[side], x[base]
			fmt.Fprintf(w, "- loopback %s CPU s/GiB ≤ 1/3 of the stock forwarder's: %.2f / %.2f = %.2f: %s\n", dir, s.CPUPerGiB, v.CPUPerGiB, s.CPUPerGiB/v.CPUPerGiB, verdict(s.CPUPerGiB/v.CPUPerGiB <= 1.0/3))
		}
	}
	if l, ok := lat[0][side]; ok && rep.PlainP50us > 0 {
		r := l.P50us / rep.PlainP50us
		fmt.Fprintf(w, "- loopback keep-alive p50 ≤ 5× plain loopback: %.0f / %.0f µs = %.1f×: %s\n", l.P50us, rep.PlainP50us, r, verdict(r <= 5))
	}
	// 4: memory.
	peak, peakAt := 0.0, ""
	var anon, file float64
	for _, k := range keys {
		s := m[k][side]
		if k.streams != 1 {
			continue
		}
		if s.PeakRSSMiB > peak {
			peak, peakAt = s.PeakRSSMiB, fmt.Sprintf("%s, loss %s, %s", rttName(k.rtt), lossName(k.loss), k.dir)
		}
		anon, file = max(anon, s.PeakAnonMiB), max(file, s.FileMiB)
	}
	fmt.Fprintf(w, "- one stream peak RSS ≤ 24 MiB at any RTT: highest %.1f MiB (%s): %s\n", peak, peakAt, verdict(peak <= 24))
	if anon > 0 {
		fmt.Fprintf(w, "  of a one-stream resident set, at most %.1f MiB anonymous (what one more pod costs) and %.1f MiB file-backed (the binary's pages, shared by pods of one image)\n", anon, file)
	}
	for _, k := range keys {
		if k.streams == 100 {
			s, v := m[k][side], m[k][base]
			fmt.Fprintf(w, "- 100 parallel streams ≤ 64 MiB, no stall: %.1f MiB, %d stalled (stock: %.1f MiB, %d stalled; %.0f vs %.0f Mbit/s): %s\n",
				s.PeakRSSMiB, s.Stalled, v.PeakRSSMiB, v.Stalled, s.Mbps, v.Mbps, verdict(s.PeakRSSMiB <= 64 && s.Stalled == 0))
		}
	}
}

// printChecks prints the harness's own checks: drops, emulator lateness,
// measured loss.
func printChecks(w io.Writer, rep *Report) {
	var errs, over, drops int64
	var late time.Duration
	lossBy := map[float64][2]int64{}
	for _, c := range rep.Cells {
		errs += c.RcvbufErrors
		drops += c.PathDrops
		for _, d := range []link.DirStats{c.LinkUp, c.LinkDown} {
			over += d.Overflow
			late = max(late, d.LateP99)
			x := lossBy[c.Loss]
			x[0] += d.Lost
			x[1] += d.Offered
			lossBy[c.Loss] = x
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Harness checks: receive-buffer drops on this path's UDP sockets (must stay 0): %d (system-wide UdpRcvbufErrors, other work included: %d); relay overflow drops: %d; worst cell's p99 send lateness of the link emulator: %v; emulated loss measured:", drops, errs, over, late)
	var ls []float64
	for l := range lossBy {
		ls = append(ls, l)
	}
	sort.Float64s(ls)
	for _, l := range ls {
		if x := lossBy[l]; x[1] > 0 {
			fmt.Fprintf(w, " %s → %.3f %%", lossName(l), 100*float64(x[0])/float64(x[1]))
		}
	}
	fmt.Fprintln(w)
}

// plotSVG draws throughput against RTT, one panel per loss rate, a line
// per direction × streams × binary, on a log scale. Hand-written SVG: no
// plotting dependency.
func plotSVG(rep *Report) []byte {
	var losses, rtts []float64
	seenL, seenR := map[float64]bool{}, map[float64]bool{}
	lo, hi := math.Inf(1), 0.0
	for _, c := range rep.Cells {
		if c.Streams > 16 {
			continue
		}
		if !seenL[c.Loss] {
			seenL[c.Loss] = true
			losses = append(losses, c.Loss)
		}
		if !seenR[c.RTTms] {
			seenR[c.RTTms] = true
			rtts = append(rtts, c.RTTms)
		}
		if c.Mbps > 0 {
			lo, hi = math.Min(lo, c.Mbps), math.Max(hi, c.Mbps)
		}
	}
	sort.Float64s(losses)
	sort.Float64s(rtts)
	if hi == 0 {
		lo, hi = 1, 10
	}
	yLo, yHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if yHi <= yLo {
		yHi = yLo + 1
	}
	const (
		pw, ph          = 360.0, 300.0
		left, top, gapX = 70.0, 50.0, 40.0
	)
	width := left + float64(len(losses))*(pw+gapX) + 10
	height := top + ph + 140
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="15">Throughput through the tunnel vs RTT (%s, %s); rate cap %.0f Mbit/s off loopback</text>`+"\n", left, rep.When, strings.SplitN(rep.Host, ",", 2)[0], capOf(rep))
	type series struct {
		dir     string
		streams int
		color   string
	}
	ser := []series{{"download", 1, "#1f77b4"}, {"download", 16, "#2ca02c"}, {"upload", 1, "#ff7f0e"}, {"upload", 16, "#d62728"}}
	y := func(v float64) float64 {
		v = math.Max(v, math.Pow(10, yLo))
		return top + ph - (math.Log10(v)-yLo)/(yHi-yLo)*ph
	}
	for pi, loss := range losses {
		x0 := left + float64(pi)*(pw+gapX)
		x := func(i int) float64 { return x0 + 20 + float64(i)*(pw-40)/math.Max(1, float64(len(rtts)-1)) }
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#888"/>`+"\n", x0, top, pw, ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="13">loss %s per direction</text>`+"\n", x0+pw/2, top-8, lossName(loss))
		for e := yLo; e <= yHi; e++ {
			for _, mult := range []float64{1, 2, 5} {
				v := mult * math.Pow(10, e)
				if math.Log10(v) > yHi {
					continue
				}
				fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", x0, x0+pw, y(v), y(v))
				if pi == 0 {
					fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%g</text>`+"\n", x0-6, y(v)+4, v)
				}
			}
		}
		if c := capOf(rep); c > 0 {
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#999" stroke-dasharray="2,3"/>`+"\n", x(1), x0+pw, y(c), y(c))
		}
		for i, r := range rtts {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x(i), top+ph+16, rttName(r))
		}
		for _, s := range ser {
			for _, line := range plotLines {
				bin := line.bin
				var pts []string
				for i, r := range rtts {
					for _, c := range rep.Cells {
						if c.Binary == bin && transportOf(c.Transport) == line.transport && c.Loss == loss && c.RTTms == r && c.Dir == s.dir && c.Streams == s.streams {
							pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(c.Mbps)))
						}
					}
				}
				if len(pts) == 0 {
					continue
				}
				dash, marker := line.dash, line.marker
				fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
				for _, p := range pts {
					var px, py float64
					fmt.Sscanf(p, "%f,%f", &px, &py)
					switch marker {
					case "circle":
						fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px, py, s.color)
					case "ring":
						fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="white" stroke="%s" stroke-width="2"/>`+"\n", px, py, s.color)
					default:
						fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="6" height="6" fill="white" stroke="%s"/>`+"\n", px-3, py-3, s.color)
					}
				}
			}
		}
	}
	fmt.Fprintf(&b, `<text x="20" y="%.1f" transform="rotate(-90 20 %.1f)" text-anchor="middle">Mbit/s (log)</text>`+"\n", top+ph/2, top+ph/2)
	ly := top + ph + 45
	for i, s := range ser {
		lx := left + float64(i)*200
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`, lx, lx+30, ly, ly, s.color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s × %d</text>`+"\n", lx+36, ly+4, s.dir, s.streams)
	}
	ly += 24
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#333" stroke-width="2"/><circle cx="%.1f" cy="%.1f" r="3" fill="#333"/>`, left, left+30, ly, ly, left+15, ly)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">glaceon-sidecar</text>`+"\n", left+36, ly+4)
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#333" stroke-width="2" stroke-dasharray="6,4"/><rect x="%.1f" y="%.1f" width="6" height="6" fill="white" stroke="#333"/>`, left+230, left+260, ly, ly, left+242, ly-3)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">stock wireguard-go netstack forwarder</text>`+"\n", left+266, ly+4)
	if hasTransport(rep, websocket) {
		ly += 20
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#333" stroke-width="2" stroke-dasharray="1,3"/><circle cx="%.1f" cy="%.1f" r="4" fill="white" stroke="#333" stroke-width="2"/>`, left, left+30, ly, ly, left+15, ly)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">glaceon-sidecar over WebSocket (no loss: lossy cells not measured)</text>`+"\n", left+36, ly+4)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#666">dotted: rate cap. Load average before / after: %s / %s (2 cores shared with other work).</text>`+"\n", left, ly+28, rep.LoadBefore, rep.LoadAfter)
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// plotLines are the lines drawn per series: the binaries over UDP, and
// the sidecar over WebSocket.
var plotLines = []struct{ bin, transport, dash, marker string }{
	{side, udp, "", "circle"},
	{base, udp, ` stroke-dasharray="6,4"`, "rect"},
	{side, websocket, ` stroke-dasharray="1,3"`, "ring"},
}

func hasTransport(rep *Report, t string) bool {
	for _, c := range rep.Cells {
		if transportOf(c.Transport) == t {
			return true
		}
	}
	return false
}

func capOf(rep *Report) float64 {
	for _, c := range rep.Cells {
		if c.RateMbit > 0 {
			return c.RateMbit
		}
	}
	return 0
}

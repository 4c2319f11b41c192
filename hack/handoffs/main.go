// Command handoffs reads a Go execution trace of small requests through the
// tunnel (BenchmarkTunnelKeepAlive run with -trace) and shows where each
// request's time goes: for every goroutine that ran during the requests,
// the mean time per request it spent running, in a system call and
// runnable (ready but waiting for a P), and then the chain of one median
// request hop by hop. Goroutines are named by their start function and the
// side that created them: the sidecar, the Fly double's gateway (gw) or the
// benchmark's client. See docs/benchmarks.md ("Small requests: where the
// time goes").
//
//	go test ./sidecar -run '^$' -bench TunnelKeepAlive -benchtime 500x -trace /tmp/trace.out
//	go run ./hack/handoffs -trace /tmp/trace.out
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"strings"

	"golang.org/x/exp/trace"
)

type goroutine struct {
	start string // start function
	side  string // sidecar, gw, bench or ?
	state trace.GoState
	since trace.Time
	then  string // where it last blocked or entered a system call
}

type span struct {
	g        trace.GoID
	from, to trace.Time
	state    trace.GoState
	then     string
}

type region struct{ from, to trace.Time }

func main() {
	path := flag.String("trace", "", "execution trace (go test -trace)")
	prefix := flag.String("region", "GET http://127.0.0.1", "region type prefix of the requests to analyse")
	last := flag.Int("last", 400, "analyse the last N such regions (the earlier ones are warm-up)")
	flag.Parse()
	if err := run(*path, *prefix, *last); err != nil {
		log.Fatal(err)
	}
}

func run(path, prefix string, last int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := trace.NewReader(f)
	if err != nil {
		return fmt.Errorf("read trace: %w", err)
	}
	gs := map[trace.GoID]*goroutine{}
	get := func(id trace.GoID) *goroutine {
		g := gs[id]
		if g == nil {
			g = &goroutine{start: "?", side: "?"}
			gs[id] = g
		}
		return g
	}
	var spans []span
	var regs []region
	open := map[trace.GoID]trace.Time{}
	for {
		ev, err := r.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read trace: %w", err)
		}
		switch ev.Kind() {
		case trace.EventRegionBegin:
			if strings.HasPrefix(ev.Region().Type, prefix) {
				open[ev.Goroutine()] = ev.Time()
			}
		case trace.EventRegionEnd:
			if t, ok := open[ev.Goroutine()]; ok && strings.HasPrefix(ev.Region().Type, prefix) {
				regs = append(regs, region{t, ev.Time()})
				delete(open, ev.Goroutine())
			}
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			id := st.Resource.Goroutine()
			from, to := st.Goroutine()
			g := get(id)
			if from == trace.GoNotExist && to != trace.GoNotExist {
				for fr := range st.Stack.Frames() {
					g.start = short(fr.Func) // the outermost frame
				}
				g.side = sideOf(ev.Stack())
				if strings.HasPrefix(g.start, "testing.") {
					g.side = "bench"
				}
				if c := gs[ev.Goroutine()]; g.side == "" && c != nil {
					g.side = c.side
				}
			}
			then := ""
			if to == trace.GoWaiting || to == trace.GoSyscall || (to == trace.GoRunnable && from == trace.GoRunning) {
				then = where(st.Stack)
			}
			if g.since != 0 {
				spans = append(spans, span{id, g.since, ev.Time(), g.state, then})
			}
			g.state, g.since = to, ev.Time()
		}
	}
	if len(regs) == 0 {
		return fmt.Errorf("no regions %q in the trace", prefix)
	}
	if len(regs) > last {
		regs = regs[len(regs)-last:]
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].from < spans[j].from })
	label := func(id trace.GoID) string { g := gs[id]; return g.side + ":" + g.start }

	type acc struct{ run, sys, runnable float64 }
	tot := map[string]*acc{}
	durs := make([]float64, len(regs))
	for i, rg := range regs {
		durs[i] = float64(rg.to-rg.from) / 1e3
		for _, s := range overlapping(spans, rg) {
			d := float64(min(s.to, rg.to)-max(s.from, rg.from)) / 1e3
			k := label(s.g)
			if tot[k] == nil {
				tot[k] = &acc{}
			}
			switch s.state {
			case trace.GoRunning:
				tot[k].run += d
			case trace.GoSyscall:
				tot[k].sys += d
			case trace.GoRunnable:
				tot[k].runnable += d
			}
		}
	}
	n := float64(len(regs))
	order := make([]int, len(regs))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(i, j int) bool { return durs[order[i]] < durs[order[j]] })
	fmt.Printf("%d requests: p50 %.0f µs, mean %.0f µs\n\n", len(regs), durs[order[len(order)/2]], mean(durs))
	keys := make([]string, 0, len(tot))
	for k := range tot {
		keys = append(keys, k)
	}
	sum := func(a *acc) float64 { return a.run + a.sys + a.runnable }
	sort.Slice(keys, func(i, j int) bool { return sum(tot[keys[i]]) > sum(tot[keys[j]]) })
	fmt.Printf("%-58s %8s %8s %8s   µs per request (mean)\n", "goroutine", "running", "syscall", "runnable")
	bySide := map[string]*acc{}
	for _, k := range keys {
		a := tot[k]
		side, _, _ := strings.Cut(k, ":")
		if bySide[side] == nil {
			bySide[side] = &acc{}
		}
		b := bySide[side]
		b.run, b.sys, b.runnable = b.run+a.run, b.sys+a.sys, b.runnable+a.runnable
		if sum(a) >= n {
			fmt.Printf("%-58s %8.1f %8.1f %8.1f\n", k, a.run/n, a.sys/n, a.runnable/n)
		}
	}
	fmt.Println()
	for _, side := range []string{"sidecar", "gw", "bench", "?"} {
		if a := bySide[side]; a != nil {
			fmt.Printf("%-58s %8.1f %8.1f %8.1f\n", "all of "+side, a.run/n, a.sys/n, a.runnable/n)
		}
	}

	rg := regs[order[len(order)/2]]
	fmt.Printf("\nmedian request, %.0f µs: start µs, length µs, state, goroutine, then\n", float64(rg.to-rg.from)/1e3)
	names := map[trace.GoState]string{trace.GoRunning: "run", trace.GoRunnable: "RUNNABLE", trace.GoSyscall: "syscall"}
	for _, s := range overlapping(spans, rg) {
		if s.state == trace.GoWaiting {
			continue
		}
		a, b := max(s.from, rg.from), min(s.to, rg.to)
		fmt.Printf("%7.1f %7.1f %-9s %-48s %s\n", float64(a-rg.from)/1e3, float64(b-a)/1e3, names[s.state], label(s.g), s.then)
	}
	return nil
}

func overlapping(spans []span, rg region) []span {
	i := sort.Search(len(spans), func(i int) bool { return spans[i].from >= rg.to })
	var out []span
	for _, s := range spans[:i] {
		if s.to > rg.from {
			out = append(out, s)
		}
	}
	return out
}

// sideOf tells from a creation stack who started a goroutine: the
// innermost frame of ours decides ("" when there is none: the creator's
// side is inherited).
func sideOf(s trace.Stack) string {
	for f := range s.Frames() {
		switch {
		case strings.Contains(f.Func, "flyapitest"):
			return "gw"
		case strings.Contains(f.Func, "glaceon/sidecar.smallGets"), strings.Contains(f.Func, "glaceon/sidecar.startPlain"),
			strings.Contains(f.Func, "glaceon/sidecar.Benchmark"):
			return "bench"
		case strings.Contains(f.Func, "glaceon/"):
			return "sidecar"
		}
	}
	return ""
}

// where names the two innermost frames outside the runtime and locks.
func where(s trace.Stack) string {
	var out []string
	for f := range s.Frames() {
		fn := short(f.Func)
		for _, skip := range []string{"runtime.", "sync.", "internal/", "sleep.", "waiter."} {
			if strings.HasPrefix(fn, skip) {
				fn = ""
				break
			}
		}
		if fn != "" {
			out = append(out, fn)
		}
		if len(out) == 2 {
			break
		}
	}
	return strings.Join(out, " < ")
}

func short(fn string) string {
	if i := strings.LastIndex(fn, "/"); i >= 0 {
		return fn[i+1:]
	}
	return fn
}

func mean(x []float64) float64 {
	s := 0.0
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/glaceon/glaceon/hack/bench-wan/link"
)

// The link emulator runs in a process of its own, like a router between two
// machines: inside the harness its send loops waited for one of the
// runtime's two Ps behind the gateway's crypto and the client's copies, and
// a datagram left up to tens of ms late at p99. For the same reason its
// threads run SCHED_FIFO (falling back to nice -10): on a shared 2-core
// machine at load 20 even an idle process waits ms for a CPU, and a wire
// does not wait for CPUs. Its threads sleep between datagrams and the
// kernel keeps 5 % of each CPU for normal tasks (sched_rt_runtime_us). The harness drives it over
// stdin/stdout, one JSON line each way:
//
//	→ {"up": Params, "down": Params, "stream_up": Params, "stream_down": Params}
//	← {"up": DirStats, "down": DirStats, "stream_up": DirStats, ...}
//
// Each command sets the parameters (when given) and answers the counts of
// the previous setting. The same process carries the WebSocket transport's
// TCP in one of two ways: as IP packets on a link.TunPath into the
// gateway's namespace, where a splice joins it to the gateway's wss port
// (the kernel TCP under the WebSocket sees delay, queue and loss: "packet"),
// or as a byte stream through link.StreamRelay (no loss: "stream"). It
// prints the UDP address, then the stream relay's, then the far end of the
// packet path (host:443).
type relayCmd struct {
	Up         *link.Params `json:"up,omitempty"`
	Down       *link.Params `json:"down,omitempty"`
	StreamUp   *link.Params `json:"stream_up,omitempty"`
	StreamDown *link.Params `json:"stream_down,omitempty"`
	PathUp     *link.Params `json:"path_up,omitempty"`
	PathDown   *link.Params `json:"path_down,omitempty"`
}

type relayStats struct {
	Up         link.DirStats `json:"up"`
	Down       link.DirStats `json:"down"`
	StreamUp   link.DirStats `json:"stream_up"`
	StreamDown link.DirStats `json:"stream_down"`
	PathUp     link.DirStats `json:"path_up"`
	PathDown   link.DirStats `json:"path_down"`
	// Reads of the stream relay that waited for room in the bottleneck
	// queue, since it started.
	StreamWaitsUp   int64 `json:"stream_waits_up"`
	StreamWaitsDown int64 `json:"stream_waits_down"`
}

// wsPathPort is where the splice at the packet path's far end listens: the
// WebSocket's port on Fly's gateways.
const wsPathPort = 443

func runRelay(target, streamTarget, ns, ifName string) {
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		fatal(fmt.Errorf("-relay-target: %w", err))
	}
	sap, err := netip.ParseAddrPort(streamTarget)
	if err != nil {
		fatal(fmt.Errorf("-relay-ws-target: %w", err))
	}
	_ = syscall.Setpriority(syscall.PRIO_PROCESS, 0, -10)
	r, err := link.NewRelay(ap, link.Params{}, link.Params{})
	if err != nil {
		fatal(err)
	}
	defer r.Close()
	sr, err := link.NewStreamRelay(sap, link.Params{}, link.Params{})
	if err != nil {
		fatal(err)
	}
	defer sr.Close()
	path, ln, err := startWSPath(ns, ifName, sap, link.Params{}, link.Params{})
	if err != nil {
		fatal(err)
	}
	defer path.Close()
	defer ln.Close()
	// Threads made later by a real-time thread inherit its policy; set the
	// existing ones now and once more when the loops are running.
	realtime()
	go func() { time.Sleep(time.Second); realtime() }()
	fmt.Println(r.Addr())
	fmt.Println(sr.Addr())
	fmt.Println(netip.AddrPortFrom(path.Far, wsPathPort))
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var cmd relayCmd
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			fatal(fmt.Errorf("relay command: %w", err))
		}
		var st relayStats
		st.Up, st.Down = r.Stats()
		st.StreamUp, st.StreamDown = sr.Stats()
		st.StreamWaitsUp, st.StreamWaitsDown = sr.Waits()
		st.PathUp, st.PathDown = path.Stats()
		if cmd.Up != nil && cmd.Down != nil {
			if err := r.Set(*cmd.Up, *cmd.Down); err != nil {
				fatal(err)
			}
		}
		if cmd.StreamUp != nil && cmd.StreamDown != nil {
			if err := sr.Set(*cmd.StreamUp, *cmd.StreamDown); err != nil {
				fatal(err)
			}
		}
		if cmd.PathUp != nil && cmd.PathDown != nil {
			if err := path.Set(*cmd.PathUp, *cmd.PathDown); err != nil {
				fatal(err)
			}
		}
		b, _ := json.Marshal(st)
		fmt.Println(string(b))
	}
}

// startWSPath makes the WebSocket's packet path: a link.TunPath into ns
// (interfaces ifName+"n" and ifName+"f") and, at its far end's port 443, a
// splice to the gateway's wss listener at target. The caller closes the
// path and the listener.
func startWSPath(ns, ifName string, target netip.AddrPort, up, down link.Params) (*link.TunPath, net.Listener, error) {
	path, err := link.NewTunPath(ns, ifName+"n", ifName+"f", 1500, up, down)
	if err != nil {
		return nil, nil, err
	}
	var ln net.Listener
	if err := link.InNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(path.Far, wsPathPort).String())
		return err
	}); err != nil {
		path.Close()
		return nil, nil, fmt.Errorf("splice listener in %s: %w", ns, err)
	}
	go splice(ln, target)
	return path, ln, nil
}

// splice joins each connection accepted at the packet path's far end to a
// new one to the gateway's wss port (loopback, in the root namespace), as a
// TCP-terminating edge in front of Fly's gateway would: the emulated path
// is between the sidecar's kernel TCP and this one.
func splice(ln net.Listener, target netip.AddrPort) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			g, err := net.Dial("tcp4", target.String())
			if err != nil {
				fmt.Fprintln(os.Stderr, "bench-wan: splice to the gateway:", err)
				return
			}
			defer g.Close()
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = io.Copy(g, c)
				_ = g.(*net.TCPConn).CloseWrite()
			}()
			_, _ = io.Copy(c, g)
			_ = c.(*net.TCPConn).CloseWrite()
			<-done
		}()
	}
}

// realtime puts every thread of this process under SCHED_FIFO priority 10.
func realtime() {
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 10}
			if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
				fmt.Fprintln(os.Stderr, "bench-wan: link emulator stays at normal priority:", err)
				return
			}
		}
	}
}

// relayProc is the harness's handle on the emulator process.
type relayProc struct {
	cmd        *exec.Cmd
	in         io.WriteCloser
	out        *bufio.Scanner
	addr       netip.AddrPort // UDP
	streamAddr netip.AddrPort // TCP, for the WebSocket over the stream relay
	pathAddr   netip.AddrPort // the WebSocket's host:443 over the packet path
	mu         sync.Mutex
}

func startRelay(target, streamTarget netip.AddrPort, ns, ifName string) (*relayProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-relay-target", target.String(), "-relay-ws-target", streamTarget.String(), "-netns", ns, "-ifname", ifName)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &relayProc{cmd: cmd, in: in, out: bufio.NewScanner(outp)}
	if !p.out.Scan() {
		p.close()
		return nil, fmt.Errorf("link emulator did not start")
	}
	if p.addr, err = netip.ParseAddrPort(strings.TrimSpace(p.out.Text())); err != nil {
		p.close()
		return nil, fmt.Errorf("link emulator address: %w", err)
	}
	if !p.out.Scan() {
		p.close()
		return nil, fmt.Errorf("link emulator did not start its stream relay")
	}
	if p.streamAddr, err = netip.ParseAddrPort(strings.TrimSpace(p.out.Text())); err != nil {
		p.close()
		return nil, fmt.Errorf("link emulator stream address: %w", err)
	}
	if !p.out.Scan() {
		p.close()
		return nil, fmt.Errorf("link emulator did not start its packet path")
	}
	if p.pathAddr, err = netip.ParseAddrPort(strings.TrimSpace(p.out.Text())); err != nil {
		p.close()
		return nil, fmt.Errorf("link emulator packet path address: %w", err)
	}
	return p, nil
}

func (p *relayProc) do(cmd relayCmd) (relayStats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, _ := json.Marshal(cmd)
	if _, err := fmt.Fprintf(p.in, "%s\n", b); err != nil {
		return relayStats{}, fmt.Errorf("link emulator: %w", err)
	}
	if !p.out.Scan() {
		return relayStats{}, fmt.Errorf("link emulator exited")
	}
	var st relayStats
	return st, json.Unmarshal(p.out.Bytes(), &st)
}

// Set changes both directions of the UDP relay and the packet path and,
// with loss left out (a byte stream cannot lose), of the stream relay, and
// resets the counts.
func (p *relayProc) Set(up, down link.Params) error {
	sup, sdown := up, down
	sup.Loss, sdown.Loss = 0, 0
	_, err := p.do(relayCmd{Up: &up, Down: &down, StreamUp: &sup, StreamDown: &sdown, PathUp: &up, PathDown: &down})
	return err
}

// Stats returns the counts since the last Set.
func (p *relayProc) Stats() (relayStats, error) { return p.do(relayCmd{}) }

// Addr is where proxies send to.
func (p *relayProc) Addr() netip.AddrPort { return p.addr }

func (p *relayProc) close() {
	p.in.Close()
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
	}
	_ = p.cmd.Wait()
}

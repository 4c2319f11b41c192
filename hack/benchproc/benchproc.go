// Package benchproc is the proxy process the tunnel benchmarks in hack/
// measure: it starts one (glaceon-sidecar, or the stock forwarder, which
// takes the same flags), waits until /readyz answers, stops it, and reads
// its resident memory, peak and CPU time from /proc. Linux only.
package benchproc

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a running proxy forwarding Listen to twi-ollama.flycast:80.
type Proc struct {
	Cmd    *exec.Cmd
	Listen string // 127.0.0.1:port of its forward
	Health string // 127.0.0.1:port of /healthz and /readyz
	exited chan error
}

// Pid is the process ID.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startAttempts bounds Start's retries. The two ports are picked free and
// released before the proxy binds them, and in between any outgoing
// connection on the machine may take one as its ephemeral port (it
// happened at the last cell of a 5-minute matrix run); a fresh pair almost
// always works, and a proxy that cannot start at all fails three times.
const startAttempts = 3

// Start runs bin with the wg-quick file cfg and the environment env (plus
// PATH) and returns once it is ready, with the time that took. The process
// is killed if the caller's process dies first. A proxy that exits before
// it is ready is started again on fresh ports, up to startAttempts times.
func Start(bin, cfg string, env []string) (*Proc, time.Duration, error) {
	var err error
	for range startAttempts {
		var p *Proc
		var took time.Duration
		if p, took, err = start(bin, cfg, env); err == nil || !errors.Is(err, errExited) {
			return p, took, err
		}
	}
	return nil, 0, fmt.Errorf("%d attempts: %w", startAttempts, err)
}

var errExited = errors.New("exited before ready")

func start(bin, cfg string, env []string) (*Proc, time.Duration, error) {
	health, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	listen, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	cmd := exec.Command(bin, "--wg-config", cfg, "--forward", listen+"=twi-ollama.flycast:80",
		"--health-addr", health, "--shutdown-grace", "1s", "--log-level", "error")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	p := &Proc{Cmd: cmd, Health: health, Listen: listen, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	for {
		resp, err := hc.Get("http://" + health + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, time.Since(start), nil
			}
		}
		select {
		case err := <-p.exited:
			return nil, 0, fmt.Errorf("%s %w: %v", filepath.Base(bin), errExited, err)
		case <-time.After(2 * time.Millisecond):
		}
		if time.Since(start) > 30*time.Second {
			p.Stop()
			return nil, 0, errors.New("not ready after 30s")
		}
	}
}

// Stop sends SIGTERM and waits; SIGKILL after 10 s.
func (p *Proc) Stop() {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.exited
	}
}

// Memory is a process's resident set now (VmRSS) and at its peak (VmHWM),
// and the two parts of the resident set now: anonymous memory (RssAnon:
// heap, stacks, what the process allocated) and file-backed pages (RssFile:
// mostly the executable's text and read-only data, shared page cache that
// every process running the same binary maps), all in KiB.
type Memory struct{ RSSKiB, HWMKiB, AnonKiB, FileKiB int64 }

// ReadMemory reads /proc/<pid>/status.
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			m.RSSKiB = n
		case "VmHWM":
			m.HWMKiB = n
		case "RssAnon":
			m.AnonKiB = n
		case "RssFile":
			m.FileKiB = n
		}
	}
	return m, sc.Err()
}

// CPUSeconds is the process's utime+stime from /proc/<pid>/stat.
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	// Fields after ')' start at field 3 (state); utime is 14, stime 15.
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return float64(ut+st) / 100, nil // USER_HZ is 100 on Linux
}

// MiB converts KiB to MiB.
func MiB(kib int64) float64 { return float64(kib) / 1024 }

// PercentileMicros is the p-quantile (0..1, nearest rank below) of d in
// microseconds; d is not reordered.
func PercentileMicros(d []time.Duration, p float64) float64 {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[int(float64(len(s)-1)*p)].Microseconds())
}

// SplitList splits a comma-separated flag value, dropping blanks.
func SplitList(s string) []string {
	var out []string
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			out = append(out, kv)
		}
	}
	return out
}

// EnvFlag is a repeatable -env K=V flag. One K=V per use, so that a value
// may itself hold commas (GLACEON_TUNING=rack=1,minrto=50ms).
type EnvFlag []string

func (e *EnvFlag) String() string { return strings.Join(*e, " ") }

// Set adds one K=V; K must be a non-empty name without "=".
func (e *EnvFlag) Set(kv string) error {
	k, _, ok := strings.Cut(kv, "=")
	if !ok || k == "" || strings.ContainsAny(k, " \t") {
		return fmt.Errorf("%q is not K=V (give -env once per variable)", kv)
	}
	*e = append(*e, kv)
	return nil
}

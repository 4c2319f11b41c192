// Package localpod runs an injected pod's glaceon sidecar as a local
// process, the way a kubelet would run it: the pod's own arguments, the peer
// Secret's wg-quick file at the mounted path. There is no kubelet on our
// test machines, so the demo and the end-to-end tests use this to send real
// traffic through a pod's tunnel.
package localpod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/glaceon/glaceon/webhook/inject"
)

// Sidecar is a running glaceon-sidecar process.
type Sidecar struct {
	// Args are the arguments it runs with (the pod's, adapted).
	Args []string
	// Forwards maps each forward of the pod ("127.0.0.2:80") to the address
	// the process listens on here: the same, unless this user may not bind
	// it (a port below 1024 without root), then a free port on that host.
	Forwards map[string]string
	// HealthURL is the base URL of /healthz and /readyz.
	HealthURL string
	// MetricsURL is the base URL of /metrics, "" when the pod serves none.
	MetricsURL string
	LogPath    string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// SidecarContainer returns the pod's injected sidecar container, native or
// classic, or nil.
func SidecarContainer(pod *corev1.Pod) *corev1.Container {
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if list[i].Name == inject.SidecarContainerName {
				return &list[i]
			}
		}
	}
	return nil
}

// PeerSecretName returns the name of the Secret the pod's sidecar mounts.
func PeerSecretName(pod *corev1.Pod) string {
	for _, v := range pod.Spec.Volumes {
		if v.Name == inject.PeerVolumeName && v.Secret != nil {
			return v.Secret.SecretName
		}
	}
	return ""
}

// Start runs bin with the pod's sidecar arguments and secret's wg-quick file
// (written to dir with mode 0600), and logs to dir/sidecar.log. The health
// and metrics servers listen on free ports of 127.0.0.1.
func Start(bin string, pod *corev1.Pod, secret *corev1.Secret, dir string) (*Sidecar, error) {
	return StartOn(bin, pod, secret, dir, "")
}

// StartOn is Start with the health and metrics servers on podIP at the
// ports the pod declares, as a kubelet runs them: what the API server's
// pod proxy reaches once the pod's status.podIP is podIP. An empty podIP is
// Start's free loopback ports.
func StartOn(bin string, pod *corev1.Pod, secret *corev1.Secret, dir, podIP string) (*Sidecar, error) {
	sc := SidecarContainer(pod)
	if sc == nil {
		return nil, fmt.Errorf("pod %s/%s has no %s container", pod.Namespace, pod.Name, inject.SidecarContainerName)
	}
	conf, ok := secret.Data[inject.SecretKeyWGConfig]
	if !ok {
		return nil, fmt.Errorf("secret %s/%s has no %s", secret.Namespace, secret.Name, inject.SecretKeyWGConfig)
	}
	confPath := filepath.Join(dir, inject.SecretKeyWGConfig)
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		return nil, err
	}
	s := &Sidecar{
		Forwards: map[string]string{},
		LogPath:  filepath.Join(dir, "sidecar.log"),
		done:     make(chan struct{}),
	}
	// serveAddr is where a --health-addr or --metrics-addr of the pod
	// listens here.
	serveAddr := func(podAddr string) (string, error) {
		if podIP != "" {
			_, port, err := net.SplitHostPort(podAddr)
			if err != nil {
				return "", fmt.Errorf("sidecar serve address %q: %w", podAddr, err)
			}
			return net.JoinHostPort(podIP, port), nil
		}
		port, err := freePort("127.0.0.1")
		return "127.0.0.1:" + strconv.Itoa(port), err
	}
	args := append([]string(nil), sc.Args...)
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--wg-config":
			args[i+1] = confPath
		case "--health-addr", "--metrics-addr":
			addr, err := serveAddr(args[i+1])
			if err != nil {
				return nil, err
			}
			args[i+1] = addr
			if args[i] == "--health-addr" {
				s.HealthURL = "http://" + addr
			} else {
				s.MetricsURL = "http://" + addr
			}
		case "--forward":
			listen, target, _ := strings.Cut(args[i+1], "=")
			local, err := bindable(listen)
			if err != nil {
				return nil, err
			}
			s.Forwards[listen] = local
			args[i+1] = local + "=" + target
		}
	}
	if len(s.Forwards) == 0 {
		return nil, errors.New("the sidecar has no --forward")
	}
	if s.HealthURL == "" {
		return nil, errors.New("the sidecar has no --health-addr")
	}
	s.Args = args
	logFile, err := os.Create(s.LogPath)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		logFile.Close()
		close(s.done)
	}()
	return s, nil
}

// StartForTest starts the sidecar for tb, waits up to 30s until it is
// ready, and stops it in tb.Cleanup.
func StartForTest(tb testing.TB, bin string, pod *corev1.Pod, secret *corev1.Secret) *Sidecar {
	tb.Helper()
	s, err := Start(bin, pod, secret, tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		tb.Fatal(err)
	}
	return s
}

// GetForTest fetches path through the forward the pod spec listens on at
// listen (as the app would), failing tb on a transport error, and returns
// the body with surrounding space trimmed.
func (s *Sidecar) GetForTest(tb testing.TB, listen, path string) string {
	tb.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + s.Forwards[listen] + path)
	if err != nil {
		tb.Fatalf("GET %s through the sidecar's forward %s: %v", path, listen, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(body))
}

// bindable returns listen if this process may bind it, else the same host
// with a free port.
func bindable(listen string) (string, error) {
	if ln, err := net.Listen("tcp", listen); err == nil {
		ln.Close()
		return listen, nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("forward listen address %q: %w", listen, err)
	}
	port, err := freePort(host)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// WaitReady polls /readyz until it answers 200, the process exits or ctx
// ends.
func (s *Sidecar) WaitReady(ctx context.Context) error {
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get(s.HealthURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("sidecar exited before ready: %v (log %s)", s.err, s.LogPath)
		case <-ctx.Done():
			return fmt.Errorf("sidecar not ready: %w (log %s)", ctx.Err(), s.LogPath)
		case <-tick.C:
		}
	}
}

// Stop sends SIGTERM, waits up to 10s, then kills.
func (s *Sidecar) Stop() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	return s.err
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

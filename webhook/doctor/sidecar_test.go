package doctor_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/hack/localpod"
	"github.com/glaceon/glaceon/hack/testkit"
	"github.com/glaceon/glaceon/webhook/doctor"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/manager/managertest"
)

func TestMain(m *testing.M) { os.Exit(testkit.Run(m)) }

// podNetwork gives the test a pod IP of its own that the API server will
// proxy to: the API server refuses loopback and link-local pod IPs, so
// the address (in 198.18.0.0/15, the benchmarking range) sits on the host
// end of a veth pair whose other end is in a network namespace the test
// creates. Both go when the test ends, failed or not; devices and
// namespaces of a test process that was killed are removed by the next
// run. Needs root.
func podNetwork(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the pod-proxy test needs root to create a veth pair and a network namespace")
	}
	removeStalePodNetworks(t)
	pid := os.Getpid()
	ns, host, peer := fmt.Sprintf("gdoc-%d", pid), fmt.Sprintf("gdoc%d", pid), fmt.Sprintf("gdocp%d", pid)
	addr := fmt.Sprintf("198.18.%d.%d", (pid>>8)&0xff, pid&0xff)
	ip(t, "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ip(t, "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns)
	// Deleting the namespace takes the pair with it; this is for a
	// namespace that outlives its users for a moment.
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", host).Run() })
	ip(t, "addr", "add", addr+"/32", "dev", host)
	ip(t, "link", "set", host, "up")
	ip(t, "-n", ns, "link", "set", peer, "up")
	return addr
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// removeStalePodNetworks deletes the namespaces and devices podNetwork made
// for test processes that no longer exist.
func removeStalePodNetworks(t *testing.T) {
	gone := func(pid string) bool {
		n, err := strconv.Atoi(pid)
		return err == nil && syscall.Kill(n, 0) == syscall.ESRCH
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, m := range regexp.MustCompile(`(?m)^gdoc-(\d+)\b`).FindAllStringSubmatch(string(out), -1) {
			if gone(m[1]) {
				t.Logf("removing network namespace gdoc-%s of a test process that is gone", m[1])
				_ = exec.Command("ip", "netns", "del", "gdoc-"+m[1]).Run()
			}
		}
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, m := range regexp.MustCompile(`(?m)^\d+: gdoc(\d+)[@:]`).FindAllStringSubmatch(string(out), -1) {
			if gone(m[1]) {
				t.Logf("removing device gdoc%s of a test process that is gone", m[1])
				_ = exec.Command("ip", "link", "del", "gdoc"+m[1]).Run()
			}
		}
	}
}

// freePortOn is a TCP port free on addr.
func freePortOn(t *testing.T, addr string) int32 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// runningPod creates an annotated pod, marks it Running at podIP as a
// kubelet would, and starts its sidecar there (not waiting for ready).
func runningPod(t *testing.T, e *managertest.Env, ns, name, podIP string, annotations map[string]string) (*corev1.Pod, *localpod.Sidecar) {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	if err := e.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase, pod.Status.PodIP = corev1.PodRunning, podIP
	pod.Status.PodIPs = []corev1.PodIP{{IP: podIP}}
	if err := e.Client.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	var secret corev1.Secret
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: localpod.PeerSecretName(pod)}, &secret); err != nil {
		t.Fatal(err)
	}
	sc, err := localpod.StartOn(testkit.SidecarBinary(t), pod, &secret, t.TempDir(), podIP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Stop() })
	return pod, sc
}

// waitPod runs doctor pod until done accepts the results (a sidecar takes
// a moment to listen and to handshake).
func waitPod(t *testing.T, d *doctor.Doctor, ns, name string, done func([]doctor.Result) bool) []doctor.Result {
	t.Helper()
	var res []doctor.Result
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		res = d.Pod(ctx, ns, name)
		return done(res), nil
	})
	if err != nil {
		for _, r := range res {
			t.Logf("%s %s: %s | %s | %s", r.Status.Symbol(), r.Check, r.Message, r.Cause, r.Fix)
		}
		t.Fatalf("doctor pod %s/%s: %v", ns, name, err)
	}
	return res
}

func logResults(t *testing.T, res []doctor.Result) {
	t.Helper()
	for _, r := range res {
		t.Logf("%s %s: %s", r.Status.Symbol(), r.Check, r.Message)
		if r.Status != doctor.OK {
			t.Logf("    cause: %s\n    fix:   %s", r.Cause, r.Fix)
		}
	}
}

func status(res []doctor.Result, check string) doctor.Status {
	for _, r := range res {
		if r.Check == check {
			return r.Status
		}
	}
	return ""
}

// testPodSidecar: doctor pod reads the real sidecar's /readyz and /metrics
// through the API server's pod proxy, which dials the pod IP itself.
func testPodSidecar(t *testing.T, e *managertest.Env, d *doctor.Doctor, podIP string) {
	ns := e.Namespace(t, "sidecars")
	target := map[string]string{inject.AnnotationTarget: "twi-ollama.flycast:80,twi-ollama.flycast:81", inject.AnnotationTransport: "udp"}

	t.Run("healthy sidecar", func(t *testing.T) {
		_, sc := runningPod(t, e, ns, "app", podIP, target)
		res := waitPod(t, d, ns, "app", func(res []doctor.Result) bool { return status(res, doctor.CheckPodSidecarReady) == doctor.OK })
		expect(t, res)
		logResults(t, res)
		if r := res[len(res)-1]; !strings.Contains(r.Message, "last WireGuard handshake") || !strings.Contains(r.Message, "transport udp, no dial errors") {
			t.Errorf("tunnel reported as %+v", r)
		}

		// The app dials a port nothing listens on: the tunnel is fine,
		// the dial errors say why the app fails.
		var closed string
		for listen, local := range sc.Forwards {
			if strings.HasSuffix(listen, ":81") {
				closed = local
			}
		}
		if c, err := net.DialTimeout("tcp", closed, 5*time.Second); err == nil {
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.ReadAll(c)
			c.Close()
		}
		res = waitPod(t, d, ns, "app", func(res []doctor.Result) bool { return status(res, doctor.CheckPodSidecarTunnel) == doctor.Warn })
		expect(t, res, doctor.CheckPodSidecarTunnel+"=warn")
		logResults(t, res)
		if r := find(t, res, doctor.CheckPodSidecarTunnel); !strings.Contains(r.Message, "1 dial error(s) (refused 1)") || !strings.Contains(r.Fix, "nothing listens on that port") {
			t.Errorf("dial errors reported as %+v", r)
		}

		// The sidecar stops: the API server cannot reach it.
		if err := sc.Stop(); err != nil {
			t.Logf("sidecar stopped: %v", err)
		}
		res = d.Pod(context.Background(), ns, "app")
		expect(t, res, doctor.CheckPodSidecarReady+"=fail", doctor.CheckPodSidecarTunnel+"=fail")
		logResults(t, res)
		if r := find(t, res, doctor.CheckPodSidecarReady); !strings.Contains(r.Message, "cannot reach the sidecar") || !strings.Contains(r.Fix, "logs app -c glaceon-sidecar") {
			t.Errorf("stopped sidecar reported as %+v", r)
		}
	})

	t.Run("a user without pods/proxy", func(t *testing.T) {
		// The stock view role reads pods but not pods/proxy: the fix names
		// the permission.
		ctx := context.Background()
		cfg := e.UserConfig(t, "viewer", ns, "view")
		c, err := client.New(cfg, client.Options{Scheme: e.Client.Scheme()})
		if err != nil {
			t.Fatal(err)
		}
		viewer, err := doctor.New(c, doctor.Options{RESTConfig: cfg})
		if err != nil {
			t.Fatal(err)
		}
		res := viewer.Pod(ctx, ns, "app")
		r := find(t, res, doctor.CheckPodSidecarReady)
		if !strings.Contains(r.Cause, "HTTP 403") || !strings.Contains(r.Fix, "get on pods/proxy in namespace "+ns) {
			t.Errorf("no pods/proxy reported as %+v", r)
		}
	})

	t.Run("sidecar with no handshake", func(t *testing.T) {
		// UDP to the gateway blocked, and the pod allows UDP only.
		e.Fly.BlockUDP(true)
		defer e.Fly.BlockUDP(false)
		runningPod(t, e, ns, "blocked", podIP, target)
		// Past "starting": the watchdog's first round says why.
		res := waitPod(t, d, ns, "blocked", func(res []doctor.Result) bool {
			ready, tunnel := res[len(res)-2], res[len(res)-1]
			return strings.Contains(ready.Cause, "no WireGuard handshake") && strings.Contains(tunnel.Message, "no WireGuard handshake")
		})
		expect(t, res, doctor.CheckPodSidecarReady+"=fail", doctor.CheckPodSidecarTunnel+"=fail")
		logResults(t, res)
		if r := find(t, res, doctor.CheckPodSidecarReady); !strings.Contains(r.Cause, "no WireGuard handshake yet over udp") || !strings.Contains(r.Fix, "glaceon.fly/transport: auto") {
			t.Errorf("not ready sidecar reported as %+v", r)
		}
		if r := find(t, res, doctor.CheckPodSidecarTunnel); !strings.Contains(r.Fix, "UDP 51820") {
			t.Errorf("no handshake reported as %+v", r)
		}
	})
}

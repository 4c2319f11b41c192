package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/glaceon/glaceon/sidecar"
	"github.com/glaceon/glaceon/webhook/inject"
)

// Metrics of the sidecar the tunnel check reads (sidecar/metrics.go,
// sidecar/transport.go).
const (
	metricHandshakeAge = "glaceon_wireguard_last_handshake_age_seconds"
	metricDialErrors   = "glaceon_dial_errors_total"
	metricTransport    = "glaceon_transport_current"
)

// maxProxyBody bounds what doctor reads from a sidecar through the pod
// proxy (/metrics of a sidecar with many forwards is a few tens of KiB).
const maxProxyBody = 1 << 20

// dialErrorHints explains each reason label of glaceon_dial_errors_total
// (sidecar.DialReason*).
var dialErrorHints = map[string]string{
	sidecar.DialReasonDNS:         "the target's name does not resolve in Fly DNS: check the app name in glaceon.fly/target (`fly apps list`)",
	sidecar.DialReasonRefused:     "the app refused the connection: nothing listens on that port (check the port in glaceon.fly/target and the app's services)",
	sidecar.DialReasonTimeout:     "the app did not answer: its Machines are stopped or unreachable (`fly status -a APP`)",
	sidecar.DialReasonHandshake:   "the tunnel had no WireGuard handshake when the app dialled: see the sidecar's readiness",
	sidecar.DialReasonUnreachable: "no route to the target's address inside the Fly network (wrong org or network?)",
}

// podProxy reads a pod's port through the API server's pod proxy
// (/api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH): the API server dials
// the pod IP itself, so doctor needs no route to the pod network, only get
// on pods/proxy.
type podProxy struct {
	base *url.URL
	hc   *http.Client
}

func newPodProxy(cfg *rest.Config) (*podProxy, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("HTTP client for the API server: %w", err)
	}
	base, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("API server URL: %w", err)
	}
	return &podProxy{base: base, hc: hc}, nil
}

// proxyAnswer is what came back through the pod proxy: from the pod
// (fromPod) or the API server's own error (apiStatus).
type proxyAnswer struct {
	code      int
	body      string
	fromPod   bool
	apiStatus *metav1.Status
}

func (p *podProxy) get(ctx context.Context, pod *corev1.Pod, port int32, path string) (*proxyAnswer, error) {
	u := p.base.JoinPath("api", "v1", "namespaces", pod.Namespace, "pods", pod.Name+":"+strconv.Itoa(int(port)), "proxy", path)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProxyBody))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", u.Path, err)
	}
	a := &proxyAnswer{code: resp.StatusCode, body: string(body)}
	// The sidecar answers text/plain; the API server's own errors (dial
	// failed, forbidden, no pod IP) are a JSON Status.
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var st metav1.Status
	if mt == "application/json" && json.Unmarshal(body, &st) == nil && st.Kind == "Status" {
		a.apiStatus = &st
	} else {
		a.fromPod = true
	}
	return a, nil
}

// sidecarPorts returns the pod's sidecar container ports named health and
// metrics (0 when absent), native or classic.
func sidecarPorts(pod *corev1.Pod) (health, metrics int32, found bool) {
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if c.Name != inject.SidecarContainerName {
				continue
			}
			for _, p := range c.Ports {
				switch p.Name {
				case inject.HealthPortName:
					health = p.ContainerPort
				case inject.MetricsPortName:
					metrics = p.ContainerPort
				}
			}
			return health, metrics, true
		}
	}
	return 0, 0, false
}

// checkSidecar reads the sidecar's /readyz on its health port and, when the
// pod serves metrics, its handshake age, transport and dial errors from
// /metrics, both through the API server's pod proxy.
func (d *Doctor) checkSidecar(ctx context.Context, pod *corev1.Pod) []Result {
	health, metrics, found := sidecarPorts(pod)
	if !found || health == 0 {
		return []Result{failed(GroupPod, CheckPodSidecarReady, "the injected pod has no "+inject.SidecarContainerName+" container with a health port",
			"the pod spec was changed after injection", "recreate the pod (`kubectl rollout restart` its workload)")}
	}
	if pod.Status.PodIP == "" {
		return []Result{failed(GroupPod, CheckPodSidecarReady, "the pod has no IP yet, so its sidecar cannot be asked",
			fmt.Sprintf("pod phase %s", pod.Status.Phase), "wait until it is scheduled and started; `kubectl describe pod` shows why not")}
	}
	if d.proxy == nil {
		return []Result{warned(GroupPod, CheckPodSidecarReady, "sidecar not checked", "doctor has no REST config for the pod proxy", "run it through `glaceon doctor pod`")}
	}
	out := []Result{d.checkReadyz(ctx, pod, health)}
	if metrics == 0 {
		out = append(out, ok(GroupPod, CheckPodSidecarTunnel, "handshake age and dial errors not read: the sidecar serves no metrics (the manager's --sidecar-metrics-port is off)"))
		return out
	}
	return append(out, d.checkSidecarMetrics(ctx, pod, metrics))
}

// proxyFailure turns an answer that is not the sidecar's, or no answer,
// into a failed check with the fix.
func proxyFailure(check string, pod *corev1.Pod, port int32, a *proxyAnswer, err error) Result {
	what := fmt.Sprintf("cannot reach the sidecar of pod %s/%s at %s:%d through the API server", pod.Namespace, pod.Name, pod.Status.PodIP, port)
	if err != nil {
		return failed(GroupPod, check, what, err.Error(), "check the API server answers (`kubectl get --raw /readyz`)")
	}
	cause := fmt.Sprintf("HTTP %d: %s", a.code, strings.TrimSpace(a.apiStatus.Message))
	switch a.code {
	case http.StatusForbidden, http.StatusUnauthorized:
		return failed(GroupPod, check, what, cause, fmt.Sprintf("you need get on pods/proxy in namespace %s (docs/doctor.md has a Role)", pod.Namespace))
	}
	return failed(GroupPod, check, what, cause,
		"the sidecar is not running or not listening (`kubectl -n "+pod.Namespace+" logs "+pod.Name+" -c "+inject.SidecarContainerName+
			"`), or a NetworkPolicy keeps the API server from the pod's port "+strconv.Itoa(int(port)))
}

func (d *Doctor) checkReadyz(ctx context.Context, pod *corev1.Pod, port int32) Result {
	a, err := d.proxy.get(ctx, pod, port, "readyz")
	if err != nil || !a.fromPod {
		return proxyFailure(CheckPodSidecarReady, pod, port, a, err)
	}
	status := strings.TrimSpace(a.body)
	if a.code == http.StatusOK {
		return ok(GroupPod, CheckPodSidecarReady, "sidecar ready: %s", status)
	}
	fix := "`kubectl -n " + pod.Namespace + " logs " + pod.Name + " -c " + inject.SidecarContainerName + "` says more"
	switch {
	case strings.Contains(status, "handshake") && strings.Contains(status, "over udp"):
		fix = "UDP 51820 to the gateway is blocked from the pod: allow it, or set glaceon.fly/transport: auto (WireGuard over WebSocket on TCP 443) and recreate the pod"
	case strings.Contains(status, "handshake") && strings.Contains(status, "websocket"):
		fix = "UDP 51820 and TCP 443 to the gateway are both blocked from the pod: allow one of them; behind a proxy set HTTPS_PROXY in the sidecar's environment"
	case strings.Contains(status, "handshake"):
		fix = "the gateway does not answer: egress to it is blocked, or its Fly peer was removed (`glaceon doctor pod` shows the FlyPeer; recreate the pod)"
	case strings.Contains(status, "Fly DNS"):
		fix = "the tunnel is up but Fly DNS does not answer through it: the gateway is degraded; the sidecar retries and reconnects by itself"
	case strings.Contains(status, "listener"):
		fix = "another container of the pod holds the sidecar's listen address: move that container or change glaceon.fly/target"
	}
	return failed(GroupPod, CheckPodSidecarReady, fmt.Sprintf("sidecar of pod %s/%s is not ready (HTTP %d)", pod.Namespace, pod.Name, a.code), status, fix)
}

// checkSidecarMetrics reports the last handshake's age, the transport in use
// and the dial errors by reason.
func (d *Doctor) checkSidecarMetrics(ctx context.Context, pod *corev1.Pod, port int32) Result {
	a, err := d.proxy.get(ctx, pod, port, "metrics")
	if err != nil || !a.fromPod {
		return proxyFailure(CheckPodSidecarTunnel, pod, port, a, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(a.body))
	if a.code != http.StatusOK || err != nil {
		return failed(GroupPod, CheckPodSidecarTunnel, "the sidecar's /metrics is unreadable", fmt.Sprintf("HTTP %d: %v", a.code, err), "check the sidecar's image is glaceon's (`glaceon version`)")
	}
	transport := "unknown"
	if f := families[metricTransport]; f != nil {
		for _, m := range f.GetMetric() {
			if m.GetGauge().GetValue() == 1 {
				transport = label(m, "transport")
			}
		}
	}
	age := -1.0
	if f := families[metricHandshakeAge]; f != nil && len(f.GetMetric()) > 0 {
		age = f.GetMetric()[0].GetGauge().GetValue()
	}
	errs := map[string]float64{}
	var total float64
	if f := families[metricDialErrors]; f != nil {
		for _, m := range f.GetMetric() {
			if v := m.GetCounter().GetValue(); v > 0 {
				errs[label(m, "reason")] += v
				total += v
			}
		}
	}
	if age < 0 {
		return failed(GroupPod, CheckPodSidecarTunnel, fmt.Sprintf("no WireGuard handshake yet (transport %s)", transport),
			fmt.Sprintf("%s is -1: the gateway never answered this pod's peer", metricHandshakeAge),
			"UDP 51820 (or, with transport auto, TCP 443) to the gateway is blocked from the pod; the sidecar's readiness names the transport tried")
	}
	ageText := (time.Duration(math.Round(age)) * time.Second).String()
	if stale := sidecar.HandshakeStale; age > stale.Seconds() {
		return failed(GroupPod, CheckPodSidecarTunnel, fmt.Sprintf("last WireGuard handshake %s ago (transport %s)", ageText, transport),
			fmt.Sprintf("older than %s: the tunnel is down", stale), "egress to the gateway stopped working, or its Fly peer was removed; the sidecar's readiness says which")
	}
	msg := fmt.Sprintf("last WireGuard handshake %s ago, transport %s", ageText, transport)
	if total == 0 {
		return ok(GroupPod, CheckPodSidecarTunnel, "%s, no dial errors", msg)
	}
	reasons := make([]string, 0, len(errs))
	for r := range errs {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	var counts, hints []string
	for _, r := range reasons {
		counts = append(counts, fmt.Sprintf("%s %.0f", r, errs[r]))
		if h, known := dialErrorHints[r]; known {
			hints = append(hints, r+": "+h)
		}
	}
	if len(hints) == 0 {
		hints = append(hints, "the sidecar's log names each failed target")
	}
	return warned(GroupPod, CheckPodSidecarTunnel, fmt.Sprintf("%s, %.0f dial error(s) (%s)", msg, total, strings.Join(counts, ", ")),
		"the tunnel is up but connections to a target failed ("+metricDialErrors+")", strings.Join(hints, "; "))
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

package main

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/glaceon/glaceon/webhook/inject"
)

func TestParseResourceList(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "", want: "none"},
		{in: "cpu=10m,memory=32Mi", want: "cpu=10m,memory=32Mi"},
		{in: " memory = 128Mi ", want: "memory=128Mi"},
		{in: "ephemeral-storage=1Gi", want: "ephemeral-storage=1Gi"},
		{in: "memory", err: "want name=quantity"},
		{in: "memory=", err: "want name=quantity"},
		{in: "gpu=1", err: `resource "gpu" is not cpu, memory or ephemeral-storage`},
		{in: "memory=lots", err: `"lots" is not a quantity`},
		{in: "memory=-1Mi", err: "cannot be negative"},
		{in: "cpu=1,cpu=2", err: "cpu given twice"},
	} {
		l, err := parseResourceList(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseResourceList(%q) = %v, want error containing %q", tc.in, err, tc.err)
			}
		case err != nil:
			t.Errorf("parseResourceList(%q): %v", tc.in, err)
		case formatResourceList(l) != tc.want:
			t.Errorf("parseResourceList(%q) = %s, want %s", tc.in, formatResourceList(l), tc.want)
		}
	}
}

func FuzzParseResourceList(f *testing.F) {
	for _, s := range []string{"", "cpu=10m,memory=32Mi", "memory=1e3", "x=y", "cpu=1,,", "=", "memory=9223372036854775807Ei"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := parseResourceList(s)
		if err != nil {
			return
		}
		// What it accepts, it prints in a form it accepts again, unchanged.
		again, err := parseResourceList(formatResourceList(l))
		if len(l) == 0 {
			return
		}
		if err != nil || formatResourceList(again) != formatResourceList(l) {
			t.Errorf("round trip of %q: %v %v → %v", s, formatResourceList(l), err, formatResourceList(again))
		}
	})
}

func TestManagerSidecarFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--sidecar-requests=memory=256Mi", "--sidecar-limits=memory=128Mi"}, "--sidecar-requests memory=256Mi is above --sidecar-limits memory=128Mi"},
		{[]string{"--sidecar-requests=memory=256Mi"}, "is above --sidecar-limits memory=128Mi"},
		{[]string{"--sidecar-image-pull-policy=Sometimes"}, `"Sometimes" is not Always, IfNotPresent or Never`},
		{[]string{"--sidecar-limits=gpu=1"}, `resource "gpu"`},
		{[]string{"--sidecar-transport=tcp"}, `sidecar transport "tcp" is not one of auto, udp, websocket`},
	} {
		var stderr bytes.Buffer
		code := run(append([]string{"manager"}, tc.args...), nil, &bytes.Buffer{}, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), tc.err) {
			t.Errorf("glaceon manager %v: exit %d, %q; want exit %d naming %q", tc.args, code, stderr.String(), exitUsage, tc.err)
		}
	}
}

func TestCheckRequestsWithinLimits(t *testing.T) {
	r := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi"), corev1.ResourceCPU: resource.MustParse("1")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
	}
	if err := checkRequestsWithinLimits(r); err != nil {
		t.Errorf("equal request and limit, no CPU limit: %v", err)
	}
}

// TestManagerRefusesBadFlagsAtStart: a peer prefix too long for a peer
// name (issue 15 item 7: it used to panic every admission), a sweep grace
// under the floor (item 11), a Fly timeout that leaves no room for the
// clean-up inside the webhook's timeout (item 8): each is a usage error
// naming the flag, before anything connects anywhere.
func TestManagerRefusesBadFlagsAtStart(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--peer-prefix=" + strings.Repeat("k", 60) + "-"}, "shorten --peer-prefix"},
		{[]string{"--cluster-name=Prod-EU"}, "cluster name"},
		{[]string{"--sweep-grace=5s"}, "--sweep-grace=1m0s or more"},
		{[]string{"--fly-timeout=14s"}, "fly timeout 14s must be positive and at most 12s"},
	} {
		code, _, stderr := runCLI(t, append([]string{"manager"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("glaceon manager %v: exit %d, stderr %q; want usage error with %q", tc.args, code, stderr, tc.want)
		}
	}
}

// The sidecar's listen host and metrics port go from the manager's flags
// into the injection config, and from there into the sidecar's arguments.
func TestManagerSidecarServeFlags(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantArgs string
		wantErr  string
	}{
		{name: "default: every address family, no metrics", wantArgs: "--health-addr [::]:9901"},
		{name: "IPv4 only with metrics", args: []string{"--sidecar-listen-host", "0.0.0.0", "--sidecar-metrics-port", "9902"},
			wantArgs: "--health-addr 0.0.0.0:9901 --metrics-addr 0.0.0.0:9902"},
		{name: "explicit ::", args: []string{"--sidecar-listen-host", "::"}, wantArgs: "--health-addr [::]:9901"},
		{name: "a pod address is unknown at admission", args: []string{"--sidecar-listen-host", "10.0.0.5"},
			wantErr: `health listen host "10.0.0.5" is not :: (every address family) or 0.0.0.0 (IPv4 only)`},
		{name: "metrics port out of range", args: []string{"--sidecar-metrics-port", "70000"},
			wantErr: "--sidecar-metrics-port 70000: give 0 (off) or a port from 1 to 65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cfg, _, err := parseManagerFlags(&cliEnv{stderr: &stderr}, tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			pod, err := inject.Inject(podWithTarget(), cfg.Inject, inject.PlaceholderPeer())
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(pod.Spec.InitContainers[0].Args, " "); !strings.HasSuffix(got, tt.wantArgs) {
				t.Errorf("sidecar args = %q, want the suffix %q", got, tt.wantArgs)
			}
		})
	}
}

func podWithTarget() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default",
			Annotations: map[string]string{inject.AnnotationTarget: "twi-ollama.flycast:80", inject.AnnotationOrg: "personal"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

package main

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/glaceon/glaceon/webhook/inject"
)

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
			cfg, _, err := parseManagerFlags(&cliEnv{stderr: &stderr}, append([]string{"--default-org", "personal"}, tt.args...))
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
			Annotations: map[string]string{inject.AnnotationTarget: "twi-ollama.flycast:80"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

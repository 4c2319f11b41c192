package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/glaceon/glaceon/webhook/inject"
)

const podManifest = `apiVersion: v1
kind: Pod
metadata:
  name: demo
  annotations:
    glaceon.fly/target: twi-ollama.flycast,db.internal:5432
spec:
  containers:
  - name: app
    image: example.invalid/app:1
`

func TestInject(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(path, []byte(podManifest), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "inject", "-f", path, "--org", "personal")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict([]byte(stdout), &pod); err != nil {
		t.Fatalf("output is not a pod: %v\n%s", err, stdout)
	}
	if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != inject.SidecarContainerName {
		t.Fatalf("no sidecar: %+v", pod.Spec.InitContainers)
	}
	args := strings.Join(pod.Spec.InitContainers[0].Args, " ")
	for _, want := range []string{"127.0.0.2:80=twi-ollama.flycast:80", "127.0.0.3:5432=db.internal:5432"} {
		if !strings.Contains(args, want) {
			t.Errorf("sidecar args %q lack %q", args, want)
		}
	}
	if pod.Annotations[inject.AnnotationPeer] != inject.PlaceholderPeerName {
		t.Errorf("peer annotation = %q, want the placeholder", pod.Annotations[inject.AnnotationPeer])
	}

	// Injecting the output again changes nothing.
	if err := os.WriteFile(path, []byte(stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	code, again, stderr := runCLI(t, "inject", "-f", path, "--org", "personal")
	if code != exitOK || again != stdout {
		t.Errorf("second injection differs (exit %d, %s)", code, stderr)
	}
}

func TestInjectErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no file flag", []string{"inject"}, exitUsage, "-f is required"},
		{"missing file", []string{"inject", "-f", filepath.Join(dir, "nope.yaml")}, exitError, "no such file"},
		{"not a pod", []string{"inject", "-f", write("deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")}, exitError, `kind "Deployment"`},
		{"not annotated", []string{"inject", "-f", write("plain.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, image: b}]}\n")}, exitError, "no glaceon.fly/target annotation"},
		{"bad target", []string{"inject", "-f", write("bad.yaml", strings.Replace(podManifest, "db.internal:5432", "example.com:80", 1))}, exitError, "would deny this pod"},
		{"bad mode", []string{"inject", "-f", write("ok.yaml", podManifest), "--mode", "sideways"}, exitUsage, "sideways"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
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
		{"no pods", []string{"inject", "-f", write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")}, exitError, "no glaceon.fly/target annotation"},
		{"deployment not annotated", []string{"inject", "-f", write("deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")}, exitError, "no glaceon.fly/target annotation"},
		{"unknown field", []string{"inject", "-f", write("typo.yaml", strings.Replace(podManifest, "containers:", "containerz:", 1))}, exitError, "not a valid Pod manifest"},
		{"bad document among several", []string{"inject", "-f", write("multi-bad.yaml", podManifest+"---\n"+strings.Replace(podManifest, "db.internal:5432", "example.com:80", 1)), "--org", "personal"}, exitError, "document 2: the webhook would deny this pod"},
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

// workloads is one document of each kind glaceon injects, plus a Service
// and an un-annotated Deployment, which are copied unchanged.
const workloads = `# a comment before the first document
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {glaceon.fly/target: twi-ollama}
    spec:
      containers: [{name: app, image: example.invalid/app:1}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata:
      labels: {app: db}
      annotations: {glaceon.fly/target: "db.internal:5432"}
    spec:
      containers: [{name: app, image: example.invalid/app:1}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata:
      labels: {app: agent}
      annotations: {glaceon.fly/target: twi-ollama}
    spec:
      containers: [{name: app, image: example.invalid/app:1}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  selector: {matchLabels: {app: rs}}
  template:
    metadata:
      labels: {app: rs}
      annotations: {glaceon.fly/target: twi-ollama}
    spec:
      containers: [{name: app, image: example.invalid/app:1}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    metadata:
      annotations: {glaceon.fly/target: twi-ollama}
    spec:
      restartPolicy: Never
      containers: [{name: app, image: example.invalid/app:1}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {glaceon.fly/target: twi-ollama}
        spec:
          restartPolicy: OnFailure
          containers: [{name: app, image: example.invalid/app:1}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain}
spec:
  selector: {matchLabels: {app: plain}}
  template:
    metadata: {labels: {app: plain}}
    spec:
      containers: [{name: app, image: example.invalid/app:1}]
`

// TestInjectWorkloads reads several documents from stdin, as
// istioctl kube-inject does: every annotated pod template gets the
// sidecar, the rest is copied as it was, and the output injects to itself.
func TestInjectWorkloads(t *testing.T) {
	stdinCLI := func(input string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run([]string{"inject", "-f", "-", "--org", "personal"}, strings.NewReader(input), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, stdout, stderr := stdinCLI(workloads)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	docs := strings.Split(stdout, "---\n")
	if len(docs) != 8 {
		t.Fatalf("%d documents out, want 8:\n%s", len(docs), stdout)
	}
	templateOf := func(i int, obj any, tmpl func() *corev1.PodTemplateSpec) *corev1.PodTemplateSpec {
		t.Helper()
		if err := yaml.UnmarshalStrict([]byte(docs[i]), obj); err != nil {
			t.Fatalf("document %d: %v\n%s", i+1, err, docs[i])
		}
		return tmpl()
	}
	var (
		deploy appsv1.Deployment
		sts    appsv1.StatefulSet
		ds     appsv1.DaemonSet
		rs     appsv1.ReplicaSet
		job    batchv1.Job
		cron   batchv1.CronJob
		plain  appsv1.Deployment
	)
	injected := map[string]*corev1.PodTemplateSpec{
		"Deployment":  templateOf(0, &deploy, func() *corev1.PodTemplateSpec { return &deploy.Spec.Template }),
		"StatefulSet": templateOf(2, &sts, func() *corev1.PodTemplateSpec { return &sts.Spec.Template }),
		"DaemonSet":   templateOf(3, &ds, func() *corev1.PodTemplateSpec { return &ds.Spec.Template }),
		"ReplicaSet":  templateOf(4, &rs, func() *corev1.PodTemplateSpec { return &rs.Spec.Template }),
		"Job":         templateOf(5, &job, func() *corev1.PodTemplateSpec { return &job.Spec.Template }),
		"CronJob":     templateOf(6, &cron, func() *corev1.PodTemplateSpec { return &cron.Spec.JobTemplate.Spec.Template }),
	}
	for kind, tmpl := range injected {
		if len(tmpl.Spec.InitContainers) != 1 || tmpl.Spec.InitContainers[0].Name != inject.SidecarContainerName {
			t.Errorf("%s: no sidecar in the pod template: %+v", kind, tmpl.Spec.InitContainers)
		}
		if tmpl.Annotations[inject.AnnotationPeer] != inject.PlaceholderPeerName {
			t.Errorf("%s: template peer annotation = %q", kind, tmpl.Annotations[inject.AnnotationPeer])
		}
	}
	if deploy.Spec.Replicas == nil || *deploy.Spec.Replicas != 3 || deploy.Namespace != "shop" || deploy.Spec.Template.Namespace != "" {
		t.Errorf("the Deployment's own fields changed: replicas %v, namespace %q, template namespace %q",
			deploy.Spec.Replicas, deploy.Namespace, deploy.Spec.Template.Namespace)
	}
	if !strings.Contains(docs[1], "kind: Service") || strings.Contains(docs[1], "status") {
		t.Errorf("the Service was not copied unchanged:\n%s", docs[1])
	}
	if err := yaml.UnmarshalStrict([]byte(docs[7]), &plain); err != nil || len(plain.Spec.Template.Spec.InitContainers) != 0 {
		t.Errorf("the un-annotated Deployment was changed (%v):\n%s", err, docs[7])
	}

	code, again, stderr := stdinCLI(stdout)
	if code != exitOK || again != stdout {
		t.Errorf("second injection differs (exit %d, %s)", code, stderr)
	}
}

// TestInjectMatchesWebhookGoldens runs the webhook's golden cases
// (webhook/inject/testdata) through `glaceon inject`: the offline output
// must be what the webhook injects, but for the placeholder peer.
func TestInjectMatchesWebhookGoldens(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("..", "..", "webhook", "inject", "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cases := 0
	for _, input := range inputs {
		if strings.HasSuffix(input, ".injected.yaml") {
			continue
		}
		cases++
		name := strings.TrimSuffix(filepath.Base(input), ".yaml")
		t.Run(name, func(t *testing.T) {
			// The goldens' config: webhook/inject's testConfig and testPeer.
			code, stdout, stderr := runCLI(t, "inject", "-f", input, "--org", "acme", "--image", "registry.example/glaceon-sidecar:v0.0.0-test")
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var got, want corev1.Pod
			if err := yaml.UnmarshalStrict([]byte(stdout), &got); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(strings.TrimSuffix(input, ".yaml") + ".injected.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.UnmarshalStrict(data, &want); err != nil {
				t.Fatal(err)
			}
			if got.Annotations[inject.AnnotationPeer] != inject.PlaceholderPeerName {
				t.Fatalf("peer annotation %q, want the placeholder", got.Annotations[inject.AnnotationPeer])
			}
			got.Annotations[inject.AnnotationPeer] = want.Annotations[inject.AnnotationPeer]
			for i := range got.Spec.Volumes {
				if v := &got.Spec.Volumes[i]; v.Name == inject.PeerVolumeName && v.Secret != nil {
					if v.Secret.SecretName != inject.PlaceholderSecretName {
						t.Fatalf("peer Secret %q, want the placeholder", v.Secret.SecretName)
					}
					for _, w := range want.Spec.Volumes {
						if w.Name == inject.PeerVolumeName && w.Secret != nil {
							v.Secret.SecretName = w.Secret.SecretName
						}
					}
				}
			}
			gotYAML, _ := yaml.Marshal(&got)
			wantYAML, _ := yaml.Marshal(&want)
			if string(gotYAML) != string(wantYAML) {
				t.Errorf("glaceon inject differs from the webhook's golden file (peer aside):\n got:\n%s\nwant:\n%s", gotYAML, wantYAML)
			}
		})
	}
	if cases < 5 {
		t.Fatalf("only %d golden cases found", cases)
	}
}

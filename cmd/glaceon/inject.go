package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/glaceon/glaceon/webhook/inject"
)

// maxManifest bounds what `glaceon inject` reads.
const maxManifest = 4 << 20

func runInject(env *cliEnv, args []string) error {
	fs := newFlagSet(env, "inject", "glaceon inject -f manifest.yaml [--org ORG] [--image IMAGE] [--mode native|classic]")
	file := fs.String("f", "", "manifest (YAML, several documents allowed, or JSON): Pods and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs are injected, everything else is copied; - for stdin (required)")
	org := fs.String("org", "", "FlyOrg for pods without glaceon.fly/org, as the cluster's default FlyOrg (glaceon.fly/default=true)")
	region := fs.String("region", "", "default gateway region, as the FlyOrg's spec.defaultRegion")
	image := fs.String("image", inject.DefaultSidecarImage, "sidecar image")
	mode := fs.String("mode", string(inject.SidecarModeNative), "sidecar mode: native (init container, Kubernetes 1.29+) or classic")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return usagef("inject: -f is required (a manifest, or - for stdin)")
	}
	cfg := inject.DefaultConfig()
	cfg.DefaultOrg, cfg.DefaultRegion, cfg.Image, cfg.Mode = *org, *region, *image, inject.SidecarMode(*mode)
	if err := cfg.Validate(); err != nil {
		return usagef("inject: %v", err)
	}

	var r io.Reader = env.stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return fmt.Errorf("inject: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxManifest+1))
	if err != nil {
		return fmt.Errorf("inject: read %s: %w", *file, err)
	}
	if len(data) > maxManifest {
		return fmt.Errorf("inject: %s is larger than %d bytes", *file, maxManifest)
	}
	docs, err := splitDocuments(data)
	if err != nil {
		return fmt.Errorf("inject: %s: %w", *file, err)
	}
	if len(docs) == 0 {
		return fmt.Errorf("inject: %s holds no manifest", *file)
	}

	var out bytes.Buffer
	injected, opted := 0, 0
	for i, doc := range docs {
		if i > 0 {
			out.WriteString("---\n")
		}
		result, wanted, err := injectDocument(doc, cfg)
		if err != nil {
			where := *file
			if len(docs) > 1 {
				where = fmt.Sprintf("%s, document %d", *file, i+1)
			}
			return fmt.Errorf("inject: %s: %w", where, err)
		}
		if wanted {
			opted++
		}
		if result == nil {
			out.Write(doc) // not a workload, or not opted in: unchanged
			continue
		}
		injected++
		out.Write(result)
	}
	if opted == 0 {
		return fmt.Errorf("inject: %s: no %s annotation on any pod or pod template, so the webhook would leave them alone; add e.g. %s: twi-ollama.flycast to the pod's (or the pod template's) metadata", *file, inject.AnnotationTarget, inject.AnnotationTarget)
	}
	_, err = env.stdout.Write(out.Bytes())
	return err
}

// splitDocuments splits a YAML stream (or one JSON object) into its
// non-empty documents, each ending in a newline.
func splitDocuments(data []byte) ([][]byte, error) {
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var probe map[string]any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			return nil, fmt.Errorf("not YAML: %w", err)
		}
		if len(probe) == 0 {
			continue // comments only, or an empty document
		}
		doc = bytes.TrimLeft(doc, "\n")
		if !bytes.HasSuffix(doc, []byte("\n")) {
			doc = append(doc, '\n')
		}
		docs = append(docs, doc)
	}
}

// workload is a manifest kind glaceon injects: its object and where its
// pod template is (nil for a Pod).
type workload struct {
	obj      any
	template func() *corev1.PodTemplateSpec
	meta     func() *metav1.ObjectMeta
}

func workloadOf(kind string) (workload, bool) {
	switch kind {
	case "Pod":
		p := &corev1.Pod{}
		return workload{obj: p, meta: func() *metav1.ObjectMeta { return &p.ObjectMeta }}, true
	case "Deployment":
		d := &appsv1.Deployment{}
		return workload{obj: d, template: func() *corev1.PodTemplateSpec { return &d.Spec.Template }, meta: func() *metav1.ObjectMeta { return &d.ObjectMeta }}, true
	case "StatefulSet":
		s := &appsv1.StatefulSet{}
		return workload{obj: s, template: func() *corev1.PodTemplateSpec { return &s.Spec.Template }, meta: func() *metav1.ObjectMeta { return &s.ObjectMeta }}, true
	case "DaemonSet":
		d := &appsv1.DaemonSet{}
		return workload{obj: d, template: func() *corev1.PodTemplateSpec { return &d.Spec.Template }, meta: func() *metav1.ObjectMeta { return &d.ObjectMeta }}, true
	case "ReplicaSet":
		r := &appsv1.ReplicaSet{}
		return workload{obj: r, template: func() *corev1.PodTemplateSpec { return &r.Spec.Template }, meta: func() *metav1.ObjectMeta { return &r.ObjectMeta }}, true
	case "Job":
		j := &batchv1.Job{}
		return workload{obj: j, template: func() *corev1.PodTemplateSpec { return &j.Spec.Template }, meta: func() *metav1.ObjectMeta { return &j.ObjectMeta }}, true
	case "CronJob":
		c := &batchv1.CronJob{}
		return workload{obj: c, template: func() *corev1.PodTemplateSpec { return &c.Spec.JobTemplate.Spec.Template }, meta: func() *metav1.ObjectMeta { return &c.ObjectMeta }}, true
	}
	return workload{}, false
}

// injectDocument injects one document. It returns nil (copy the document
// unchanged) for kinds without pods and for pods that do not opt in;
// wanted reports whether the pod opted in.
func injectDocument(doc []byte, cfg inject.Config) (out []byte, wanted bool, err error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, false, fmt.Errorf("not a Kubernetes manifest: %w", err)
	}
	w, ok := workloadOf(tm.Kind)
	if !ok {
		return nil, false, nil
	}
	if err := yaml.UnmarshalStrict(doc, w.obj); err != nil {
		return nil, false, fmt.Errorf("not a valid %s manifest: %w", tm.Kind, err)
	}
	pod, ok := w.obj.(*corev1.Pod)
	if !ok {
		// The template as the pod the controller will create from it.
		tmpl := w.template()
		pod = &corev1.Pod{ObjectMeta: *tmpl.ObjectMeta.DeepCopy(), Spec: *tmpl.Spec.DeepCopy()}
		pod.Namespace = w.meta().Namespace
	}
	if !inject.WantsInjection(pod) {
		return nil, false, nil
	}
	// Offline, like a dry run: the peer and Secret names are placeholders.
	injected, err := inject.Inject(pod, cfg, inject.PlaceholderPeer())
	if err != nil {
		var invalid *inject.InvalidPodError
		if errors.As(err, &invalid) {
			var b bytes.Buffer
			for _, e := range invalid.Errors {
				fmt.Fprintf(&b, "\n  - %s", e.Error())
			}
			return nil, true, fmt.Errorf("the webhook would deny this pod:%s", b.String())
		}
		return nil, true, err
	}
	if tmpl := w.template; tmpl != nil {
		t := tmpl()
		namespace := t.Namespace
		t.ObjectMeta, t.Spec = injected.ObjectMeta, injected.Spec
		t.Namespace = namespace
		out, err = yaml.Marshal(w.obj)
	} else {
		out, err = yaml.Marshal(injected)
	}
	if err != nil {
		return nil, true, fmt.Errorf("encode: %w", err)
	}
	return out, true, nil
}

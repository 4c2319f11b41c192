// Package manifests renders glaceon's install (deploy/ through kustomize,
// the chart through helm) into objects and compares them semantically. The
// release tool and the install tests share it, so install.yaml, the chart
// and deploy/ are judged by one set of rules.
package manifests

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-cmp/cmp"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Object is one decoded manifest, JSON-shaped (maps, slices, strings,
// float64, bool).
type Object = map[string]any

// Kustomize renders a kustomization directory with kubectl's built-in
// kustomize, exactly what `kubectl apply -k dir` applies.
func Kustomize(kubectl, dir string) ([]byte, error) {
	return run(kubectl, "kustomize", dir)
}

// HelmTemplate renders a chart as `helm template` with the release name
// glaceon in namespace, CRDs included, plus extra flags (-f, --set …).
func HelmTemplate(helm, chartDir, namespace string, extra ...string) ([]byte, error) {
	return run(helm, append([]string{"template", "glaceon", chartDir, "--namespace", namespace, "--include-crds"}, extra...)...)
}

// Tool returns the path of a pinned tool from hack/tool.sh (built and
// cached on first use), given the repository root.
func Tool(root, name string) (string, error) {
	out, err := run(filepath.Join(root, "hack", "tool.sh"), name)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

func run(name string, args ...string) ([]byte, error) {
	var out, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return out.Bytes(), nil
}

// Decode parses a multi-document YAML stream, skipping empty documents.
func Decode(stream []byte) ([]Object, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	var objs []Object
	for i := 0; ; i++ {
		var obj Object
		if err := dec.Decode(&obj); err == io.EOF {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(obj) > 0 {
			objs = append(objs, obj)
		}
	}
}

// ID names an object: apiVersion Kind namespace/name.
func ID(obj Object) string {
	md, _ := obj["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	n, _ := md["name"].(string)
	if ns != "" {
		n = ns + "/" + n
	}
	return fmt.Sprintf("%v %v %s", obj["apiVersion"], obj["kind"], n)
}

// Kind returns an object's kind.
func Kind(obj Object) string { k, _ := obj["kind"].(string); return k }

// helmLabels are the labels Helm charts conventionally add; they say who
// installed an object, not what it is.
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// partOfLabel is what deploy/kustomization.yaml adds to every object.
const partOfLabel = "app.kubernetes.io/part-of"

// DiffChart compares what deploy/ renders with what the chart renders and
// returns the differences ("" when the same objects come out). The rules,
// and why each is not a difference:
//   - Helm's own labels (helm.sh/chart, managed-by, instance, version) and
//     helm.sh/* annotations on the chart's side: bookkeeping of the install.
//   - deploy/'s Namespace: Helm installs into a namespace that exists.
//   - app.kubernetes.io/part-of on CustomResourceDefinitions: Helm does not
//     template crds/, so the chart cannot add it (the files themselves are
//     checked to be deploy/crd's).
//   - null values and empty maps and lists: the API server reads them as
//     absent.
func DiffChart(deploy, chart []Object) string {
	want := index(deploy, func(o Object) bool { return Kind(o) != "Namespace" }, func(o Object) {
		if Kind(o) == "CustomResourceDefinition" {
			deleteLabel(o, partOfLabel)
		}
	})
	got := index(chart, func(Object) bool { return true }, func(o Object) {
		for _, l := range helmLabels {
			deleteLabel(o, l)
		}
		md, _ := o["metadata"].(map[string]any)
		if ann, ok := md["annotations"].(map[string]any); ok {
			for k := range ann {
				if strings.HasPrefix(k, "helm.sh/") {
					delete(ann, k)
				}
			}
		}
	})
	return diffIndexes(want, got, "deploy/", "chart")
}

// Diff compares two object sets as they are (after dropping nulls and
// empty collections), e.g. install.yaml against the chart with the
// release's values.
func Diff(a, b []Object, aName, bName string) string {
	all := func(Object) bool { return true }
	return diffIndexes(index(a, all, func(Object) {}), index(b, all, func(Object) {}), aName, bName)
}

func diffIndexes(want, got map[string]any, wantName, gotName string) string {
	var out []string
	for _, id := range sortedKeys(want) {
		g, ok := got[id]
		if !ok {
			out = append(out, fmt.Sprintf("%s: in %s, not in %s", id, wantName, gotName))
			continue
		}
		if d := cmp.Diff(want[id], g); d != "" {
			out = append(out, fmt.Sprintf("%s differs (-%s +%s):\n%s", id, wantName, gotName, d))
		}
	}
	for _, id := range sortedKeys(got) {
		if _, ok := want[id]; !ok {
			out = append(out, fmt.Sprintf("%s: in %s, not in %s", id, gotName, wantName))
		}
	}
	return strings.Join(out, "\n")
}

func index(objs []Object, keep func(Object) bool, fix func(Object)) map[string]any {
	m := map[string]any{}
	for _, o := range objs {
		if !keep(o) {
			continue
		}
		o = deepCopy(o).(map[string]any)
		fix(o)
		m[ID(o)] = prune(o)
	}
	return m
}

func deleteLabel(o Object, key string) {
	md, _ := o["metadata"].(map[string]any)
	if labels, ok := md["labels"].(map[string]any); ok {
		delete(labels, key)
	}
}

// prune drops nulls and empty maps and lists, recursively.
func prune(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			e = prune(e)
			if isEmpty(e) {
				delete(v, k)
			} else {
				v[k] = e
			}
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = prune(e)
		}
		return v
	}
	return v
}

func isEmpty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(v) == 0
	case []any:
		return len(v) == 0
	}
	return false
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = deepCopy(e)
		}
		return s
	}
	return v
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

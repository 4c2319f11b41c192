package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/glaceon/glaceon/deploy/manifests"
	"github.com/glaceon/glaceon/hack/controlplane"
)

const (
	testVersion = "v0.0.0-test.1"
	testCommit  = "0123456789abcdef0123456789abcdef01234567"
)

// TestRelease is `make release` and `make push` end to end: images for
// both platforms built twice (identical bytes), pushed to a registry on
// loopback, pulled back and inspected, the host-arch binaries run out of
// the pulled layers, install.yaml applied to a real API server, and the
// chart with the release's values rendering what install.yaml holds.
func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four static binaries and starts a control plane")
	}
	// A cold build of four binaries on a loaded 2-core machine took longer
	// than any fixed budget we picked; go test's own -timeout is the limit,
	// less a margin to report which step was still running.
	ctx := t.Context()
	if deadline, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-time.Minute))
		defer cancel()
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	registryPath := strings.TrimPrefix(reg.URL, "http://") + "/glaceon"
	assets, err := controlplane.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(assets, "kubectl")

	// make release, twice, into two directories.
	release := func(dist string) {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, []string{"images", "--root", root, "--out", dist, "--registry", registryPath,
			"--version", testVersion, "--commit", testCommit, "--created", "1764633600"}, &out); err != nil {
			t.Fatalf("release images: %v", err)
		}
		t.Logf("release images:\n%s", out.String())
		if err := run(ctx, []string{"install", "--root", root, "--out", dist, "--kubectl", kubectl}, io.Discard); err != nil {
			t.Fatalf("release install: %v", err)
		}
	}
	dist, again := t.TempDir(), t.TempDir()
	release(dist)
	release(again)
	for _, f := range []string{"install.yaml", "values.yaml", "oci/index.json", "oci/oci-layout"} {
		a, errA := os.ReadFile(filepath.Join(dist, f))
		b, errB := os.ReadFile(filepath.Join(again, f))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("two releases of the same commit differ in %s (%v, %v)", f, errA, errB)
		}
	}
	if a, b := blobs(t, dist), blobs(t, again); strings.Join(a, " ") != strings.Join(b, " ") {
		t.Errorf("two releases hold different blobs:\n%v\n%v", a, b)
	}

	built, err := readLayout(filepath.Join(dist, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"push", "--out", dist}, io.Discard); err != nil {
		t.Fatalf("release push: %v", err)
	}
	for _, bi := range built {
		t.Run("pulled/"+bi.Spec.Name, func(t *testing.T) { checkPulled(t, ctx, bi, registryPath) })
	}
	install, err := os.ReadFile(filepath.Join(dist, "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("install.yaml", func(t *testing.T) {
		// Started only now: no API server idles through the builds.
		cp := controlplane.StartForTest(t, controlplane.Options{NoControllerManager: true})
		checkInstall(t, cp, install, built, registryPath)
	})
	t.Run("chart with values.yaml", func(t *testing.T) {
		helm, err := manifests.Tool(root, "helm")
		if err != nil {
			t.Fatal(err)
		}
		chart, err := manifests.HelmTemplate(helm, filepath.Join(root, "deploy", "chart"), "glaceon-system",
			"-f", filepath.Join(dist, "values.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := manifests.Decode(install)
		if err != nil {
			t.Fatal(err)
		}
		got, err := manifests.Decode(chart)
		if err != nil {
			t.Fatal(err)
		}
		if d := manifests.DiffChart(want, got); d != "" {
			t.Errorf("helm template -f dist/values.yaml differs from dist/install.yaml:\n%s", d)
		}
	})
}

// blobs lists the blob files of a release's OCI layout.
func blobs(t *testing.T, dist string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dist, "oci", "blobs", "sha256", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	sort.Strings(files)
	return files
}

// checkPulled pulls an index back from the registry and checks each
// platform's image as a kubelet would see it.
func checkPulled(t *testing.T, ctx context.Context, bi builtImage, registryPath string) {
	ref, err := name.ParseReference(bi.Ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	if d, _ := idx.Digest(); d != bi.Digest {
		t.Errorf("pulled %s has digest %s, the layout %s", ref, d, bi.Digest)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, desc := range im.Manifests {
		if desc.Platform == nil {
			t.Fatalf("%s: manifest %s has no platform", ref, desc.Digest)
		}
		p := platformString(*desc.Platform)
		platforms = append(platforms, p)
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS+"/"+cf.Architecture != desc.Platform.OS+"/"+desc.Platform.Architecture {
			t.Errorf("%s %s: config says %s/%s", ref, p, cf.OS, cf.Architecture)
		}
		if cf.Config.User != "65532:65532" {
			t.Errorf("%s %s: user %q, want 65532:65532", ref, p, cf.Config.User)
		}
		if want := []string{"/" + bi.Spec.Binary}; strings.Join(cf.Config.Entrypoint, " ") != strings.Join(want, " ") {
			t.Errorf("%s %s: entrypoint %q, want %q", ref, p, cf.Config.Entrypoint, want)
		}
		if strings.Join(cf.Config.Cmd, " ") != strings.Join(bi.Spec.Cmd, " ") {
			t.Errorf("%s %s: cmd %q, want %q", ref, p, cf.Config.Cmd, bi.Spec.Cmd)
		}
		for k, v := range map[string]string{
			"org.opencontainers.image.source":   defaultSource,
			"org.opencontainers.image.version":  testVersion,
			"org.opencontainers.image.revision": testCommit,
		} {
			if cf.Config.Labels[k] != v {
				t.Errorf("%s %s: label %s = %q, want %q", ref, p, k, cf.Config.Labels[k], v)
			}
		}
		files := layerFiles(t, img)
		want := []string{bi.Spec.Binary, "etc/group", "etc/passwd"}
		if bi.Spec.CABundle {
			want = append(want, caBundlePath)
		}
		sort.Strings(want)
		var got []string
		for f := range files {
			got = append(got, f)
		}
		sort.Strings(got)
		// Exactly these files: no shell, no package manager, nothing else.
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s %s: files %v, want %v", ref, p, got, want)
		}
		if bi.Spec.CABundle {
			checkCABundle(t, files[caBundlePath])
		}
		if desc.Platform.Architecture == runtime.GOARCH {
			runVersion(t, bi.Spec, files[bi.Spec.Binary], registryPath)
		}
	}
	sort.Strings(platforms)
	if strings.Join(platforms, " ") != "linux/amd64 linux/arm64/v8" {
		t.Errorf("%s: platforms %v, want linux/amd64 and linux/arm64/v8", ref, platforms)
	}
}

// layerFiles reads the regular files of an image's layers (owners and
// modes checked on the way).
func layerFiles(t *testing.T, img v1.Image) map[string][]byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Uid != 0 || h.Gid != 0 {
				t.Errorf("%s is owned by %d:%d: the non-root user must not be able to change it", h.Name, h.Uid, h.Gid)
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			if h.FileInfo().Mode().Perm()&0o222 != 0 {
				t.Errorf("%s is writable (%v)", h.Name, h.FileInfo().Mode())
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
		_ = rc.Close()
	}
	return files
}

func checkCABundle(t *testing.T, pemBytes []byte) {
	t.Helper()
	n := 0
	for rest := pemBytes; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			t.Errorf("CA bundle certificate %d: %v", n, err)
		}
		n++
	}
	// The Mozilla store has well over 100 unconstrained roots; a truncated
	// or empty bundle would make every api.fly.io call fail.
	if n < 100 {
		t.Errorf("CA bundle holds %d roots, want the Mozilla store (>100)", n)
	}
	if !bytes.Equal(pemBytes, caBundle()) {
		t.Error("the image's CA bundle is not the pinned x509roots bundle")
	}
}

// runVersion runs the binary taken out of the pulled image.
func runVersion(t *testing.T, spec imageSpec, bin []byte, registryPath string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), spec.Binary)
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	arg := "--version"
	if spec.Name == "glaceon" {
		arg = "version"
	}
	out, err := exec.Command(path, arg).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", spec.Binary, arg, err, out)
	}
	if want := spec.Binary + " " + testVersion + " (commit " + testCommit + ")\n"; string(out) != want {
		t.Errorf("%s %s printed %q, want %q", spec.Binary, arg, out, want)
	}
	if spec.Name != "glaceon" {
		return
	}
	// With no --sidecar-image the manager injects the sidecar of its own
	// version from its own registry: `glaceon inject` uses the same default.
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default, annotations: {glaceon.fly/target: app.flycast:80}}\nspec: {containers: [{name: app, image: busybox}]}\n"
	cmd := exec.Command(path, "inject", "-f", "-", "--org", "personal")
	cmd.Stdin = strings.NewReader(pod)
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("glaceon inject: %v\n%s", err, out)
	}
	if want := "image: " + registryPath + "/glaceon-sidecar:" + testVersion + "\n"; !strings.Contains(string(out), want) {
		t.Errorf("the release's manager injects no %q by default:\n%s", want, out)
	}
}

// checkInstall applies install.yaml as the README says, server-side, and
// checks the images are the pushed digests.
func checkInstall(t *testing.T, cp *controlplane.ControlPlane, install []byte, built []builtImage, registryPath string) {
	kubectl := func(stdin []byte, args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(cp.AssetsDir, "kubectl"), append([]string{"--kubeconfig", cp.KubeconfigPath}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return out.String()
	}
	objs, err := manifests.Decode(install)
	if err != nil {
		t.Fatal(err)
	}
	var ns string
	for _, o := range objs {
		if manifests.Kind(o) == "Namespace" {
			ns = o["metadata"].(map[string]any)["name"].(string)
		}
	}
	if ns == "" {
		t.Fatal("install.yaml creates no namespace")
	}
	kubectl(nil, "create", "namespace", ns)
	kubectl(nil, "-n", ns, "create", "secret", "generic", "fly-api-token", "--from-literal=token=FlyV1 fm2_test")
	kubectl(install, "apply", "--server-side", "--field-manager=glaceon-test", "-f", "-")

	pinned := map[string]string{}
	for _, bi := range built {
		pinned[bi.Spec.Name] = registryPath + "/" + bi.Spec.Name + "@" + bi.Digest.String()
	}
	image := kubectl(nil, "-n", ns, "get", "deployment/glaceon-manager", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
	if image != pinned["glaceon"] {
		t.Errorf("manager image %q, want %q", image, pinned["glaceon"])
	}
	args := kubectl(nil, "-n", ns, "get", "deployment/glaceon-manager", "-o", "jsonpath={.spec.template.spec.containers[0].args}")
	if !strings.Contains(args, sidecarImageFlag+"="+pinned["glaceon-sidecar"]) {
		t.Errorf("manager args %s do not pin the sidecar to %s", args, pinned["glaceon-sidecar"])
	}
	// Nothing of ours is left unpinned anywhere in the file.
	for _, line := range strings.Split(string(install), "\n") {
		if strings.Contains(line, "glaceon/glaceon") && !strings.Contains(line, "@sha256:") && !strings.HasPrefix(line, "#") {
			t.Errorf("install.yaml names an image by tag: %s", line)
		}
	}
}

// The flag rewriting keeps other args and replaces both spellings.
func TestSetFlag(t *testing.T) {
	for _, tc := range []struct{ in, want []any }{
		{nil, []any{"manager", "--sidecar-image=x"}},
		{[]any{"manager", "--leader-elect"}, []any{"manager", "--leader-elect", "--sidecar-image=x"}},
		{[]any{"manager", "--sidecar-image=old", "--leader-elect"}, []any{"manager", "--sidecar-image=x", "--leader-elect"}},
		{[]any{"manager", "--sidecar-image", "old", "--leader-elect"}, []any{"manager", "--sidecar-image=x", "--leader-elect"}},
	} {
		got := setFlag(tc.in, sidecarImageFlag, "x")
		if len(got) != len(tc.want) {
			t.Errorf("setFlag(%v) = %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("setFlag(%v) = %v, want %v", tc.in, got, tc.want)
				break
			}
		}
	}
}

// pinObjects refuses a deploy/ without a manager rather than writing an
// install that cannot work.
func TestPinObjectsNeedsManager(t *testing.T) {
	objs := []manifests.Object{{"kind": "ConfigMap", "metadata": map[string]any{"name": "x"}}}
	if err := pinObjects(objs, map[string]string{"glaceon": "r/glaceon@sha256:1", "glaceon-sidecar": "r/glaceon-sidecar@sha256:2"}); err == nil {
		t.Error("no manager in deploy/: accepted")
	}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"nonsense"},
		{"images", "--platforms", "windows/amd64"},
		{"images", "--registry", "ghcr.io/glaceon/", "--commit", "x", "--created", "1"},
		{"images", "--created", "yesterday", "--commit", "x"},
		{"images", "stray"},
	} {
		err := run(context.Background(), args, io.Discard)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("release %v: %v, want a usage error", args, err)
		}
	}
}

package inject

import (
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.injected.yaml from the current output")

const goldenSuffix = ".injected.yaml"

// TestInjectGolden runs every testdata/<case>.yaml through Inject and
// compares the result with testdata/<case>.injected.yaml (regenerate with
// `go test ./webhook/inject -run TestInjectGolden -update`).
func TestInjectGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cases := 0
	for _, input := range inputs {
		if strings.HasSuffix(input, goldenSuffix) {
			if _, err := os.Stat(strings.TrimSuffix(input, goldenSuffix) + ".yaml"); err != nil {
				t.Errorf("stale golden file %s: its input is gone", input)
			}
			continue
		}
		cases++
		name := strings.TrimSuffix(filepath.Base(input), ".yaml")
		t.Run(name, func(t *testing.T) {
			pod := readPod(t, input)
			original := pod.DeepCopy()
			cfg := testConfig()

			if errs := Validate(pod, cfg); len(errs) > 0 {
				t.Fatalf("Validate: %v", errs)
			}
			injected, err := Inject(pod, cfg, testPeer())
			if err != nil {
				t.Fatalf("Inject: %v", err)
			}
			compareGolden(t, strings.TrimSuffix(input, ".yaml")+goldenSuffix, injected)

			t.Run("input untouched", func(t *testing.T) {
				if !equality.Semantic.DeepEqual(pod, original) {
					t.Error("Inject modified its input pod")
				}
			})
			t.Run("idempotent", func(t *testing.T) {
				if !IsInjected(injected) {
					t.Fatal("injected pod is not marked as injected")
				}
				if errs := Validate(injected, cfg); len(errs) > 0 {
					t.Errorf("Validate(injected) = %v, want none", errs)
				}
				// The peer differs, as on a reinvocation after provisioning
				// or a re-submission: the pod must still be left alone.
				again, err := Inject(injected, cfg, PlaceholderPeer())
				if err != nil {
					t.Fatalf("Inject(injected): %v", err)
				}
				if !equality.Semantic.DeepEqual(again, injected) {
					t.Error("Inject(Inject(pod)) differs from Inject(pod)")
				}
			})
			t.Run("dry run has the same shape", func(t *testing.T) {
				dryRun, err := Inject(pod, cfg, PlaceholderPeer())
				if err != nil {
					t.Fatalf("Inject with placeholder: %v", err)
				}
				if got := dryRun.Annotations[AnnotationPeer]; got != PlaceholderPeerName {
					t.Errorf("dry-run peer annotation = %q, want %q", got, PlaceholderPeerName)
				}
				if got := mustPeerVolume(t, dryRun).Secret.SecretName; got != PlaceholderSecretName {
					t.Errorf("dry-run secret = %q, want %q", got, PlaceholderSecretName)
				}
				// Swap the real names in: everything else must be identical.
				dryRun.Annotations[AnnotationPeer] = testPeer().Name
				mustPeerVolume(t, dryRun).Secret.SecretName = testPeer().SecretName
				if !equality.Semantic.DeepEqual(dryRun, injected) {
					t.Error("dry-run injection differs from the real one beyond the peer and Secret names")
				}
			})
			t.Run("no secrets in the pod", func(t *testing.T) {
				out, _ := yaml.Marshal(injected)
				for _, word := range []string{"PrivateKey", "FlyV1", "fm2_", "token"} {
					if strings.Contains(string(out), word) {
						t.Errorf("injected pod contains %q", word)
					}
				}
			})
			t.Run("sidecar passes Pod Security restricted", func(t *testing.T) {
				if injected.Annotations[AnnotationInjectMode] == string(SidecarModePeerOnly) {
					// The pod brings its own sidecar: peer-only adds none.
					if len(injected.Spec.Containers) != len(pod.Spec.Containers) || len(injected.Spec.InitContainers) != len(pod.Spec.InitContainers) {
						t.Error("peer-only mode added containers")
					}
					return
				}
				assertSidecarRestricted(t, injected)
			})
		})
	}
	if cases < 6 {
		t.Errorf("found %d golden cases in testdata, want at least 6", cases)
	}
}

func readPod(t *testing.T, path string) *corev1.Pod {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &pod
}

func compareGolden(t *testing.T, goldenPath string, pod *corev1.Pod) {
	t.Helper()
	got, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(goldenPath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s is out of date (run with -update if the change is intended); first difference:\n%s",
			goldenPath, firstDifference(string(want), string(got)))
	}
}

// firstDifference shows the first differing line of two texts with context.
func firstDifference(want, got string) string {
	wantLines, gotLines := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wantLines) || i < len(gotLines); i++ {
		var w, g string
		if i < len(wantLines) {
			w = wantLines[i]
		}
		if i < len(gotLines) {
			g = gotLines[i]
		}
		if w != g {
			return "line " + strconv.Itoa(i+1) + ":\n- " + w + "\n+ " + g
		}
	}
	return "(none)"
}

func mustPeerVolume(t *testing.T, pod *corev1.Pod) *corev1.Volume {
	t.Helper()
	v := peerVolume(pod)
	if v == nil {
		t.Fatal("no peer volume")
	}
	return v
}

package inject

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/glaceon/glaceon/hack/testkit/podsecurity"
)

// restrictedFailures evaluates a pod against Pod Security "restricted".
func restrictedFailures(t *testing.T, pod *corev1.Pod) []string {
	t.Helper()
	return podsecurity.RestrictedFailures(t, &pod.ObjectMeta, &pod.Spec)
}

// assertSidecarRestricted checks what glaceon adds, whatever the app does:
// the pod reduced to the sidecar plus the pod-level fields glaceon may set
// (sysctls, volumes, host aliases) must pass "restricted".
func assertSidecarRestricted(t *testing.T, injected *corev1.Pod) {
	t.Helper()
	reduced := injected.DeepCopy()
	reduced.Spec.InitContainers, reduced.Spec.Containers = nil, nil
	for _, c := range append(injected.Spec.InitContainers, injected.Spec.Containers...) {
		if c.Name == SidecarContainerName {
			reduced.Spec.Containers = []corev1.Container{c}
		}
	}
	if len(reduced.Spec.Containers) != 1 {
		t.Fatal("no sidecar container in the injected pod")
	}
	// Only glaceon's part of the pod security context is under test.
	var sysctls []corev1.Sysctl
	if sc := injected.Spec.SecurityContext; sc != nil {
		sysctls = sc.Sysctls
	}
	reduced.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: sysctls}
	if failures := restrictedFailures(t, reduced); len(failures) > 0 {
		t.Errorf("sidecar fails Pod Security restricted: %q", failures)
	}
}

func TestInjectedPodPassesRestricted(t *testing.T) {
	for _, mode := range []SidecarMode{SidecarModeNative, SidecarModeClassic} {
		t.Run(string(mode), func(t *testing.T) {
			// Port 80 also brings in the unprivileged-port sysctl.
			pod := newPod(withRestrictedApp(), withTargets("twi-ollama,db.internal:5432"),
				withAnnotation(AnnotationInjectMode, string(mode)))
			if failures := restrictedFailures(t, pod); len(failures) > 0 {
				t.Fatalf("fixture itself fails restricted: %q", failures)
			}
			injected, err := Inject(pod, testConfig(), testPeer())
			if err != nil {
				t.Fatal(err)
			}
			if failures := restrictedFailures(t, injected); len(failures) > 0 {
				t.Errorf("injected pod fails Pod Security restricted: %q", failures)
			}
		})
	}
}

// TestRestrictedCheckIsNotVacuous proves the evaluator above does catch a
// sidecar that breaks "restricted", so the passing tests mean something.
func TestRestrictedCheckIsNotVacuous(t *testing.T) {
	injected, err := Inject(newPod(withRestrictedApp()), testConfig(), testPeer())
	if err != nil {
		t.Fatal(err)
	}
	injected.Spec.InitContainers[0].SecurityContext.AllowPrivilegeEscalation = nil
	injected.Spec.InitContainers[0].SecurityContext.Capabilities = nil
	if failures := restrictedFailures(t, injected); len(failures) != 2 {
		t.Errorf("weakened sidecar: got failures %q, want allowPrivilegeEscalation and capabilities", failures)
	}
}

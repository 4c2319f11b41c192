package admission

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/flyorg"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/peers"
)

// These tests are about what the handler decides without the Fly API or a
// real cluster (the envtest suite uses both): the fake client counts every
// write, and the Fly base URL points nowhere, so any Fly call fails loudly.

func readyOrg() *glaceonv1alpha1.FlyOrg {
	return &glaceonv1alpha1.FlyOrg{
		ObjectMeta: metav1.ObjectMeta{Name: "personal"},
		Spec: glaceonv1alpha1.FlyOrgSpec{
			TokenSecretRef: glaceonv1alpha1.SecretKeyRef{Name: "fly-api-token", Key: "token"},
			Namespaces:     []string{"*"},
		},
		Status: glaceonv1alpha1.FlyOrgStatus{
			OrganizationID: "T3JnLzE=",
			Conditions:     []metav1.Condition{{Type: glaceonv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: flyorg.ReasonReady, LastTransitionTime: metav1.Now()}},
		},
	}
}

func newTestHandler(t *testing.T, objs ...client.Object) (*Handler, *int) {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = glaceonv1alpha1.AddToScheme(scheme)
	writes := 0
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(&glaceonv1alpha1.FlyPeer{}).
		WithInterceptorFuncs(interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			writes++
			return c.Create(ctx, obj, opts...)
		}}).Build()
	namer, err := peers.NewNamer("k8s-", "test")
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(scheme, Options{
		Inject:     inject.DefaultConfig(),
		Orgs:       flyorg.NewRegistry("glaceon-system", c, c, flyapi.Options{BaseURL: "http://127.0.0.1:1"}),
		Reader:     c,
		APIReader:  c,
		Client:     c,
		Namer:      namer,
		Timeout:    5 * time.Second,
		FlyTimeout: time.Second,
		Log:        logr.Discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, &writes
}

func podRequest(t *testing.T, pod *corev1.Pod, dryRun bool) admission.Request {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "uid-1",
		Operation: admissionv1.Create,
		Namespace: "default",
		Object:    runtime.RawExtension{Raw: raw},
		DryRun:    ptr.To(dryRun),
	}}
}

func annotated() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Namespace: "default", Annotations: map[string]string{inject.AnnotationTarget: "twi-ollama"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "x"}}},
	}
}

// TestReinvocationMakesNoPeer: with reinvocationPolicy IfNeeded the API
// server may send an already injected pod again; its FlyPeer is unbound in
// the same namespace, so it passes unchanged and nothing is written.
func TestReinvocationMakesNoPeer(t *testing.T) {
	name := "k8s-default-web-test-abcdef"
	fp := peers.NewFlyPeer(name, "personal", "", wgquick.Key{}, "default")
	h, writes := newTestHandler(t, readyOrg(), fp)
	injected, err := inject.Inject(annotated(), injectCfg(), inject.Peer{Name: name, SecretName: name})
	if err != nil {
		t.Fatal(err)
	}
	resp := h.Handle(context.Background(), podRequest(t, injected, false))
	if !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("reinvocation: allowed=%v patches=%d, want allowed with no patch", resp.Allowed, len(resp.Patches))
	}
	if *writes != 0 {
		t.Errorf("reinvocation wrote %d objects", *writes)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	h, writes := newTestHandler(t, readyOrg())
	resp := h.Handle(context.Background(), podRequest(t, annotated(), true))
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("dry run: allowed=%v patches=%d (%v)", resp.Allowed, len(resp.Patches), resp.Result)
	}
	if *writes != 0 {
		t.Errorf("dry run wrote %d objects", *writes)
	}
}

// TestDeniedBeforeAnyWrite: policy and readiness are decided from the
// FlyOrgs alone; a denied pod costs no write and no Fly call.
func TestDeniedBeforeAnyWrite(t *testing.T) {
	notReady := readyOrg()
	notReady.Status.Conditions[0].Status, notReady.Status.Conditions[0].Reason = metav1.ConditionFalse, flyorg.ReasonUnauthorized
	notReady.Status.Conditions[0].Message = "the Fly API rejected the token"
	teamOnly := readyOrg()
	teamOnly.Spec.Namespaces = []string{"team-*"}
	for name, tc := range map[string]struct {
		org  *glaceonv1alpha1.FlyOrg
		want string
	}{
		"not ready":             {notReady, `FlyOrg "personal" is not ready (Unauthorized): the Fly API rejected the token`},
		"namespace not allowed": {teamOnly, `namespace "default" may not use the default FlyOrg "personal"`},
	} {
		t.Run(name, func(t *testing.T) {
			h, writes := newTestHandler(t, tc.org)
			resp := h.Handle(context.Background(), podRequest(t, annotated(), false))
			if resp.Allowed || !strings.Contains(resp.Result.Message, tc.want) {
				t.Errorf("allowed=%v message=%q, want a denial with %q", resp.Allowed, resp.Result.Message, tc.want)
			}
			if *writes != 0 {
				t.Errorf("denial wrote %d objects", *writes)
			}
		})
	}
}

func TestFlyTimeoutMustLeaveRoomForCleanup(t *testing.T) {
	_, err := NewHandler(clientgoscheme.Scheme, Options{Inject: inject.DefaultConfig(), Timeout: 10 * time.Second, FlyTimeout: 9 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "fly timeout 9s must be positive and at least 2s under the admission timeout 10s") {
		t.Errorf("err = %v", err)
	}
}

func injectCfg() inject.Config {
	cfg := inject.DefaultConfig()
	cfg.DefaultOrg = "personal"
	return cfg
}

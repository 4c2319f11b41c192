package admission

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/webhook/inject"
)

// countingFly is a FlyAPI that only counts: these tests are about what the
// handler does without the Fly API (the envtest suite uses the real double).
type countingFly struct{ calls atomic.Int64 }

func (f *countingFly) CachedOrganization(context.Context, string) (*flyapi.Organization, error) {
	f.calls.Add(1)
	return &flyapi.Organization{ID: "T3JnLzE=", Slug: "personal"}, nil
}

func (f *countingFly) AddPeer(context.Context, flyapi.AddPeerInput) (*flyapi.CreatedPeer, error) {
	f.calls.Add(1)
	return nil, &flyapi.Error{Kind: flyapi.KindTransient, Message: "not in this test"}
}

func (f *countingFly) RemovePeer(context.Context, flyapi.Organization, string) error {
	f.calls.Add(1)
	return nil
}

func newTestHandler(t *testing.T) (*Handler, *countingFly) {
	t.Helper()
	fly := &countingFly{}
	cfg := inject.DefaultConfig()
	cfg.DefaultOrg = "personal"
	h, err := NewHandler(clientgoscheme.Scheme, Options{
		Inject:     cfg,
		Fly:        fly,
		Client:     fake.NewClientBuilder().Build(),
		FlyTimeout: time.Second,
		PeerPrefix: "k8s-",
		Log:        logr.Discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, fly
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

// TestReinvocationMakesNoPeer: with reinvocationPolicy IfNeeded the API
// server may send an already injected pod again; it must pass unchanged
// and without a Fly call, so a pod never gets two peers.
func TestReinvocationMakesNoPeer(t *testing.T) {
	h, fly := newTestHandler(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default", Annotations: map[string]string{inject.AnnotationTarget: "twi-ollama"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "x"}}},
	}
	injected, err := inject.Inject(pod, h.opts.Inject, inject.Peer{Name: "k8s-default-p-abcdef", SecretName: "k8s-default-p-abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	resp := h.Handle(context.Background(), podRequest(t, injected, false))
	if !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("reinvocation: allowed=%v patches=%d, want allowed with no patch", resp.Allowed, len(resp.Patches))
	}
	if n := fly.calls.Load(); n != 0 {
		t.Errorf("reinvocation made %d Fly calls", n)
	}
}

func TestDryRunMakesNoFlyCall(t *testing.T) {
	h, fly := newTestHandler(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Namespace: "default", Annotations: map[string]string{inject.AnnotationTarget: "twi-ollama"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "x"}}},
	}
	resp := h.Handle(context.Background(), podRequest(t, pod, true))
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("dry run: allowed=%v patches=%d (%v)", resp.Allowed, len(resp.Patches), resp.Result)
	}
	if n := fly.calls.Load(); n != 0 {
		t.Errorf("dry run made %d Fly calls", n)
	}
}

func TestPeerName(t *testing.T) {
	long := strings.Repeat("a", 80)
	tests := []struct {
		name, prefix, ns string
		pod              corev1.Pod
		wantPrefix       string
	}{
		{"named pod", "k8s-", "default", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1"}}, "k8s-default-web-1-"},
		{"generateName", "k8s-", "shop", corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "web-6d4b9-"}}, "k8s-shop-web-6d4b9-"},
		{"owner only", "k8s-", "shop", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{{Name: "job-x"}}}}, "k8s-shop-job-x-"},
		{"nothing", "k8s-prod-", "ns", corev1.Pod{}, "k8s-prod-ns-pod-"},
		{"odd characters", "k8s-", "Team_A", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "We.b--X"}}, "k8s-team-a-we-b-x-"},
		{"too long", "k8s-", long, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: long}}, "k8s-aaaa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PeerName(tt.prefix, &tt.pod, tt.ns)
			if !strings.HasPrefix(got, tt.wantPrefix) {
				t.Errorf("PeerName = %q, want prefix %q", got, tt.wantPrefix)
			}
			if err := flyapi.ValidatePeerName(got); err != nil {
				t.Errorf("PeerName = %q is not a valid peer name: %v", got, err)
			}
			if again := PeerName(tt.prefix, &tt.pod, tt.ns); again == got {
				t.Errorf("two names for the same pod are equal (%q): the random suffix is missing", got)
			}
		})
	}
}

func TestOrgPolicy(t *testing.T) {
	p, err := ParseOrgPolicy([]byte("orgs:\n  personal: [\"*\"]\n  acme: [team-a, \"ci-*\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		org, ns string
		want    bool
	}{
		{"personal", "anything", true},
		{"acme", "team-a", true},
		{"acme", "ci-42", true},
		{"acme", "team-b", false},
		{"other", "team-a", false},
	} {
		if got := p.Allows(tt.org, tt.ns); got != tt.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", tt.org, tt.ns, got, tt.want)
		}
	}
	for _, bad := range []string{"orgs: [x]", "orgz: {}", "orgs:\n  a: [\"[\"]\n"} {
		if _, err := ParseOrgPolicy([]byte(bad)); err == nil {
			t.Errorf("ParseOrgPolicy(%q) accepted a bad policy", bad)
		}
	}
}

// FuzzParseOrgPolicy: the policy ConfigMap is outside input; parsing must
// never panic, and an accepted policy must be usable.
func FuzzParseOrgPolicy(f *testing.F) {
	for _, seed := range []string{
		"orgs:\n  personal: [\"*\"]\n",
		"orgs:\n  acme: [team-a, \"ci-*\"]\n",
		"orgs: {}\n",
		"orgs:\n  a: [\"[\"]\n",
		"",
		"orgs: [x]",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		p, err := ParseOrgPolicy([]byte(doc))
		if err != nil {
			return
		}
		for org := range p.Orgs {
			p.Allows(org, "default")
		}
	})
}

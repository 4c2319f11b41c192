package managertest_test

import (
	"context"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/manager/managertest"
)

// TestSecureMode runs the manager as its ServiceAccount with the shipped
// RBAC: a tenant's annotated pod must be admitted and injected (the manager
// creates the peer Secret with its own permissions), and the tenant, bound
// to "edit" in its namespace, must not reach glaceon's Secrets or webhook.
func TestSecureMode(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a control plane")
	}
	e := managertest.StartWith(t, managertest.Options{Secure: true})
	ctx := context.Background()
	if e.ManagerConfig.Impersonate.UserName != "system:serviceaccount:glaceon-system:glaceon-manager" {
		t.Fatalf("manager runs as %q", e.ManagerConfig.Impersonate.UserName)
	}
	tenant := e.Tenant(t, "team-a")

	pod := managertest.AnnotatedPod("team-a", "web", map[string]string{inject.AnnotationTarget: "twi-ollama"})
	if err := tenant.Create(ctx, pod); err != nil {
		t.Fatalf("tenant's annotated pod refused: %v", err)
	}
	if !inject.IsInjected(pod) {
		t.Fatal("tenant's pod was not injected")
	}
	var secrets corev1.SecretList
	if err := e.Client.List(ctx, &secrets, client.InNamespace("team-a"), client.HasLabels{inject.LabelPeerName}); err != nil || len(secrets.Items) != 1 {
		t.Fatalf("peer Secrets in team-a: %d (%v), want 1", len(secrets.Items), err)
	}
	if n := len(e.Fly.Peers("personal")); n != 1 {
		t.Fatalf("%d peers at the Fly double, want 1", n)
	}

	// What a hostile tenant would try.
	forbidden := map[string]error{
		"read glaceon's Secrets": tenant.List(ctx, &corev1.SecretList{}, client.InNamespace(managertest.Namespace)),
		"edit the webhook":       tenant.Patch(ctx, &admissionv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "glaceon"}}, client.RawPatch("application/merge-patch+json", []byte(`{}`))),
		"read another namespace": tenant.List(ctx, &corev1.PodList{}, client.InNamespace("default")),
	}
	for what, err := range forbidden {
		if !apierrors.IsForbidden(err) {
			t.Errorf("tenant could %s: err = %v, want Forbidden", what, err)
		}
	}
}

package managertest_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
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
	e := managertest.StartWith(t, managertest.Options{AsServiceAccount: true})
	ctx := context.Background()
	if u := e.ManagerRESTConfig.Impersonate.UserName; u != "system:serviceaccount:glaceon-system:glaceon-manager" {
		t.Fatalf("manager runs as %q", u)
	}
	e.Namespace(t, "team-a")

	// A MachineProxy gets its children, and scaling to one replica deletes
	// its PDB and patches its status, all under deploy/rbac.
	mp := &glaceonv1alpha1.MachineProxy{
		ObjectMeta: metav1.ObjectMeta{Name: "proxy", Namespace: "team-a"},
		Spec:       glaceonv1alpha1.MachineProxySpec{Target: "twi-ollama", Replicas: ptr.To[int32](2)},
	}
	if err := e.Client.Create(ctx, mp); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(mp)
	managertest.WaitFor(t, "the MachineProxy's children", func() bool {
		return e.Client.Get(ctx, key, &appsv1.Deployment{}) == nil && e.Client.Get(ctx, key, &corev1.Service{}) == nil &&
			e.Client.Get(ctx, key, &corev1.ServiceAccount{}) == nil && e.Client.Get(ctx, key, &policyv1.PodDisruptionBudget{}) == nil
	})
	if err := e.Client.Patch(ctx, mp, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":1}}`))); err != nil {
		t.Fatal(err)
	}
	managertest.WaitFor(t, "the PDB deleted and the status patched", func() bool {
		got := &glaceonv1alpha1.MachineProxy{}
		return apierrors.IsNotFound(e.Client.Get(ctx, key, &policyv1.PodDisruptionBudget{})) &&
			e.Client.Get(ctx, key, got) == nil && got.Status.ObservedGeneration == got.Generation
	})

	// A tenant with the stock edit role (aggregated by the
	// kube-controller-manager) works in its namespace and nowhere else.
	tenant := e.TenantClient(t, "tenant-a", "team-a")
	managertest.WaitFor(t, "edit aggregated for the tenant", func() bool {
		return tenant.List(ctx, &corev1.PodList{}, client.InNamespace("team-a")) == nil
	})
	forbidden := map[string]error{
		"read glaceon's Secrets": tenant.List(ctx, &corev1.SecretList{}, client.InNamespace(managertest.Namespace)),
		"edit the webhook": tenant.Patch(ctx, &admissionv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "glaceon"}},
			client.RawPatch("application/merge-patch+json", []byte(`{}`))),
		"read another namespace": tenant.List(ctx, &corev1.PodList{}, client.InNamespace("default")),
	}
	for what, err := range forbidden {
		if !apierrors.IsForbidden(err) {
			t.Errorf("tenant could %s: err = %v, want Forbidden", what, err)
		}
	}
}

// TestRBACHasOneTruth: deploy/rbac is the manager's RBAC; kubebuilder RBAC
// markers would be a second, unchecked one.
func TestRBACHasOneTruth(t *testing.T) {
	root := managertest.RepoRoot()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(data), "+kubebuilder:"+"rbac") {
			t.Errorf("%s has kubebuilder RBAC markers: put the permission in deploy/rbac instead", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Package managertest is glaceon's one test environment: a real local
// control plane (etcd, kube-apiserver, kube-controller-manager), the Fly
// double, and the whole manager built by manager.New, as `glaceon manager`
// builds it. The real kube-apiserver calls the webhook over TLS with the
// certificate the manager issues itself, as in a cluster.
//
// Start runs it with defaults; StartWith takes Options:
//
//   - Configure adjusts manager.Config before manager.New. The override
//     points tests use are fields of manager.Config: Log, Inject, FlyTimeout,
//     the Sweep* durations, AdmissionMiddleware (observe or fail an
//     admission) and PeerOptions (e.g. DisableSweeper, RetryBaseDelay).
//   - Secure runs the manager as its ServiceAccount (client impersonation)
//     with deploy/rbac applied, so a permission the shipped RBAC lacks fails
//     the test, and makes Tenant available: a user bound to the stock "edit"
//     ClusterRole in one namespace, to try what a hostile tenant would.
//   - Fly configures the Fly double.
//
// Fixtures without Kubernetes (the sidecar binary, temp files) are in
// hack/testkit, the Pod Security check in hack/testkit/podsecurity.
package managertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/hack/controlplane"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/manager"
)

// Namespace is glaceon's own namespace in the test cluster.
const Namespace = "glaceon-system"

// ServiceAccount is the manager's identity in deploy/rbac.
const ServiceAccount = "glaceon-manager"

// Env is a running control plane, Fly double and manager.
type Env struct {
	ControlPlane *controlplane.ControlPlane
	Fly          *flyapitest.Server
	// Client reads from the API server (no cache), as a cluster admin.
	Client  client.Client
	Manager *manager.Manager
	// ManagerConfig is the rest config the manager runs with: the admin's,
	// or with Secure its ServiceAccount's (impersonated).
	ManagerConfig *rest.Config

	scheme *k8sruntime.Scheme
}

// Options configure StartWith; the zero value is Start's defaults.
type Options struct {
	// Configure adjusts the manager's config (defaults: org "personal",
	// peer prefix "k8s-", Fly timeout 5s, logs discarded).
	Configure func(*manager.Config)
	// Secure runs the manager as its ServiceAccount with deploy/rbac.
	Secure bool
	// Fly configures the double (default: logs discarded).
	Fly flyapitest.Options
}

// RepoRoot is the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Start runs everything for tb; configure adjusts the manager's config
// (defaults: org "personal", peer prefix "k8s-", Fly timeout 5s).
func Start(tb testing.TB, configure func(*manager.Config)) *Env {
	tb.Helper()
	return StartWith(tb, Options{Configure: configure})
}

// StartWith runs everything for tb as opts say.
func StartWith(tb testing.TB, opts Options) *Env {
	tb.Helper()
	if opts.Fly.Logf == nil {
		opts.Fly.Logf = func(string, ...any) {}
	}
	e := &Env{Fly: flyapitest.Start(tb, opts.Fly)}
	e.ControlPlane = controlplane.StartForTest(tb, controlplane.Options{
		CRDDirectoryPaths: []string{filepath.Join(RepoRoot(), "deploy", "crd")},
	})
	// No client-side throttling: tests create many objects at once.
	e.ControlPlane.Config.QPS, e.ControlPlane.Config.Burst = 1000, 1000
	var err error
	scheme := k8sruntime.NewScheme()
	for _, add := range []func(*k8sruntime.Scheme) error{clientgoscheme.AddToScheme, glaceonv1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			tb.Fatal(err)
		}
	}
	e.scheme = scheme
	if e.Client, err = client.New(e.ControlPlane.Config, client.Options{Scheme: scheme}); err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil {
		tb.Fatal(err)
	}
	e.ManagerConfig = e.ControlPlane.Config
	if opts.Secure {
		if err := ApplyYAML(ctx, e.Client, filepath.Join(RepoRoot(), "deploy", "rbac")); err != nil {
			tb.Fatalf("apply deploy/rbac: %v", err)
		}
		e.ManagerConfig = Impersonate(e.ControlPlane.Config, "system:serviceaccount:"+Namespace+":"+ServiceAccount,
			"system:serviceaccounts", "system:serviceaccounts:"+Namespace, "system:authenticated")
	}

	port, err := controlplane.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	mwc, err := WebhookConfiguration(fmt.Sprintf("https://127.0.0.1:%d", port))
	if err != nil {
		tb.Fatal(err)
	}
	if err := e.Client.Create(ctx, mwc); err != nil {
		tb.Fatalf("register the webhook: %v", err)
	}

	fly, err := flyapi.New(flyapi.Options{BaseURL: e.Fly.URL(), Token: e.Fly.Token(), TokenSource: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	cfg := manager.Config{
		Namespace:        Namespace,
		Inject:           inject.DefaultConfig(),
		PeerPrefix:       "k8s-",
		FlyTimeout:       5 * time.Second,
		GatewayPort:      e.Fly.GatewayPort(),
		TokenSource:      "secret glaceon-system/fly-api-token",
		WebhookHost:      "127.0.0.1",
		WebhookPort:      port,
		WebhookService:   "glaceon-webhook",
		WebhookConfig:    "glaceon",
		WebhookExtraSANs: []string{"127.0.0.1"},
		CertSecret:       "glaceon-webhook-tls",
		PolicyConfigMap:  "glaceon-org-policy",
		MetricsAddr:      "0",
		HealthAddr:       "0",
		Log:              logr.Discard(),
		// -count=N and benchmarks build one manager per run.
		SkipNameValidation: true,
	}
	cfg.Inject.DefaultOrg = "personal"
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	if e.Manager, err = manager.New(e.ManagerConfig, fly, cfg); err != nil {
		tb.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Manager.Start(runCtx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("manager: %v", err)
		}
	})
	// Ready as the kubelet would see it: certificate issued, caBundle
	// patched, webhook server listening.
	err = wait.PollUntilContextTimeout(runCtx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return e.Manager.Certs.Ready() && e.Manager.GetWebhookServer().StartedChecker()(nil) == nil, nil
	})
	if err != nil {
		tb.Fatalf("manager not ready: %v", err)
	}
	return e
}

// WebhookConfiguration is deploy/webhook's configuration pointed at a
// webhook server at baseURL (e.g. https://127.0.0.1:9443) instead of the
// in-cluster Service, for a manager running out of cluster.
func WebhookConfiguration(baseURL string) (*admissionv1.MutatingWebhookConfiguration, error) {
	data, err := os.ReadFile(filepath.Join(RepoRoot(), "deploy", "webhook", "mutatingwebhookconfiguration.yaml"))
	if err != nil {
		return nil, err
	}
	var mwc admissionv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(data, &mwc); err != nil {
		return nil, fmt.Errorf("parse deploy/webhook: %w", err)
	}
	for i := range mwc.Webhooks {
		cc := &mwc.Webhooks[i].ClientConfig
		cc.URL = ptr.To(baseURL + *cc.Service.Path)
		cc.Service = nil
	}
	return &mwc, nil
}

// Namespace creates a namespace.
func (e *Env) Namespace(tb testing.TB, name string) string {
	tb.Helper()
	if err := e.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		tb.Fatal(err)
	}
	return name
}

// Impersonate is cfg acting as user in groups (the admin may impersonate).
func Impersonate(cfg *rest.Config, user string, groups ...string) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return c
}

// Tenant is a client for a user bound to the stock "edit" ClusterRole in
// namespace ns only (created if missing), as a namespace's developers are
// in a cluster. The kube-controller-manager's clusterrole-aggregation
// controller gives "edit" its rules.
func (e *Env) Tenant(tb testing.TB, ns string) client.Client {
	tb.Helper()
	ctx := context.Background()
	err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatal(err)
	}
	user := "tenant-" + ns
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if err := e.Client.Create(ctx, binding); err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatal(err)
	}
	c, err := client.New(Impersonate(e.ControlPlane.Config, user, "system:authenticated"), client.Options{Scheme: e.scheme})
	if err != nil {
		tb.Fatal(err)
	}
	// Wait until "edit" has been aggregated and the binding is in force.
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return c.List(ctx, &corev1.PodList{}, client.InNamespace(ns)) == nil, nil
	})
	if err != nil {
		tb.Fatalf("tenant of %s cannot list pods there: is the clusterrole-aggregation controller running? %v", ns, err)
	}
	return c
}

// ApplyYAML creates every object of the YAML files in dir (multi-document,
// kustomization.yaml skipped) with c.
func ApplyYAML(ctx context.Context, c client.Client, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var u unstructured.Unstructured
			if err := dec.Decode(&u.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return fmt.Errorf("%s: %w", f, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if err := c.Create(ctx, &u); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("%s: create %s %s: %w", f, u.GetKind(), u.GetName(), err)
			}
		}
	}
	return nil
}

// AnnotatedPod is a minimal pod with annotations (e.g. glaceon.fly/target).
func AnnotatedPod(ns, name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}},
	}
}

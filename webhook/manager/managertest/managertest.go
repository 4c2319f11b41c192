// Package managertest runs glaceon's whole manager against a real local
// control plane and the Fly double, for end-to-end tests: the real
// kube-apiserver calls the webhook over TLS with the certificate the
// manager issues itself, as in a cluster.
package managertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
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

// Env is a running control plane, Fly double and manager.
type Env struct {
	ControlPlane *controlplane.ControlPlane
	Fly          *flyapitest.Server
	// Client reads from the API server (no cache).
	Client  client.Client
	Manager *manager.Manager
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
	e := &Env{Fly: flyapitest.Start(tb, flyapitest.Options{Logf: func(string, ...any) {}})}
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
	if e.Client, err = client.New(e.ControlPlane.Config, client.Options{Scheme: scheme}); err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil {
		tb.Fatal(err)
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
	if configure != nil {
		configure(&cfg)
	}
	if e.Manager, err = manager.New(e.ControlPlane.Config, fly, cfg); err != nil {
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

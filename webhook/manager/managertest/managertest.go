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
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
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

// Names of what Start creates in the test cluster.
const (
	// TokenSecret holds the Fly double's token, in Namespace.
	TokenSecret = "fly-api-token"
	// DefaultFlyOrg is the FlyOrg Start creates (slug personal, every
	// namespace, the default).
	DefaultFlyOrg = "personal"
	// ManagerServiceAccount is the manager's ServiceAccount in deploy/rbac.
	ManagerServiceAccount = "glaceon-manager"
)

// Env is a running control plane, Fly double and manager.
type Env struct {
	ControlPlane *controlplane.ControlPlane
	Fly          *flyapitest.Server
	// Client is a cluster admin reading from the API server (no cache).
	Client  client.Client
	Manager *manager.Manager
	// Replicas are all the managers StartWith ran (Options.Replicas);
	// Manager is the first.
	Replicas []*manager.Manager
	// Config is the manager's config as started.
	Config manager.Config
	// ManagerRESTConfig is what the manager talks to the API server with:
	// impersonating its ServiceAccount under deploy/rbac when
	// Options.AsServiceAccount.
	ManagerRESTConfig *rest.Config
	scheme            *k8sruntime.Scheme
	stop              func()
}

// Options for StartWith.
type Options struct {
	// Configure adjusts the manager's config.
	Configure func(*manager.Config)
	// AsServiceAccount runs the manager as its ServiceAccount with the
	// RBAC of deploy/rbac applied (impersonation), not as cluster admin.
	AsServiceAccount bool
	// NoFlyOrg skips the default FlyOrg and its token Secret.
	NoFlyOrg bool
	// ControlPlane, if set, is used instead of starting one (several
	// managers on one cluster; the caller stops it).
	ControlPlane *controlplane.ControlPlane
	// Fly, if set, is the Fly double to use (several clusters, one org).
	Fly *flyapitest.Server
	// Replicas is how many managers run on the cluster at once (0: one),
	// as a Deployment's replicas do: each has its own webhook port, and
	// all are built before any starts, so they race for the serving
	// certificate as replicas rolled out together do. The webhook
	// configuration points at the first.
	Replicas int
}

// RepoRoot is the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Start runs everything for tb with the default FlyOrg; configure adjusts
// the manager's config (defaults: peer prefix "k8s-", Fly timeout 5s).
func Start(tb testing.TB, configure func(*manager.Config)) *Env {
	tb.Helper()
	return StartWith(tb, Options{Configure: configure})
}

// StartWith runs a control plane (or uses opts.ControlPlane), a Fly double
// (or opts.Fly) and a manager for tb.
func StartWith(tb testing.TB, opts Options) *Env {
	tb.Helper()
	e := &Env{Fly: opts.Fly, ControlPlane: opts.ControlPlane}
	if e.Fly == nil {
		e.Fly = flyapitest.Start(tb, flyapitest.Options{Logf: func(string, ...any) {}})
	}
	if e.ControlPlane == nil {
		e.ControlPlane = controlplane.StartForTest(tb, controlplane.Options{
			CRDDirectoryPaths: []string{filepath.Join(RepoRoot(), "deploy", "crd")},
		})
	}
	// No client-side throttling: tests create many objects at once.
	e.ControlPlane.Config.QPS, e.ControlPlane.Config.Burst = 1000, 1000
	var err error
	e.scheme = k8sruntime.NewScheme()
	for _, add := range []func(*k8sruntime.Scheme) error{clientgoscheme.AddToScheme, glaceonv1alpha1.AddToScheme} {
		if err := add(e.scheme); err != nil {
			tb.Fatal(err)
		}
	}
	if e.Client, err = client.New(e.ControlPlane.Config, client.Options{Scheme: e.scheme}); err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatal(err)
	}
	e.ManagerRESTConfig = rest.CopyConfig(e.ControlPlane.Config)
	if opts.AsServiceAccount {
		if err := ApplyRBAC(ctx, e.Client); err != nil {
			tb.Fatal(err)
		}
		e.ManagerRESTConfig.Impersonate = rest.ImpersonationConfig{
			UserName: "system:serviceaccount:" + Namespace + ":" + ManagerServiceAccount,
			Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + Namespace, "system:authenticated"},
		}
	}
	if !opts.NoFlyOrg {
		e.SetToken(tb, e.Fly.Token())
		e.CreateFlyOrg(tb, DefaultFlyOrg, "personal", []string{"*"}, true)
	}

	ports := make([]int, max(opts.Replicas, 1))
	for i := range ports {
		for ports[i] == 0 || slices.Contains(ports[:i], ports[i]) {
			if ports[i], err = controlplane.FreePort(); err != nil {
				tb.Fatal(err)
			}
		}
	}
	port := ports[0]
	mwc, err := WebhookConfiguration(fmt.Sprintf("https://127.0.0.1:%d", port))
	if err != nil {
		tb.Fatal(err)
	}
	if err := e.Client.Create(ctx, mwc); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			tb.Fatalf("register the webhook: %v", err)
		}
		// A second manager on this cluster: point the webhook at it (and
		// leave alone any webhook a test added to the configuration).
		var cur admissionv1.MutatingWebhookConfiguration
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(mwc), &cur); err != nil {
			tb.Fatal(err)
		}
		for i := range cur.Webhooks {
			for _, w := range mwc.Webhooks {
				if w.Name == cur.Webhooks[i].Name {
					cur.Webhooks[i].ClientConfig.URL = w.ClientConfig.URL
				}
			}
		}
		if err := e.Client.Update(ctx, &cur); err != nil {
			tb.Fatal(err)
		}
	}

	cfg := manager.Config{
		Namespace:        Namespace,
		Inject:           inject.DefaultConfig(),
		PeerPrefix:       "k8s-",
		Fly:              flyapi.Options{BaseURL: e.Fly.URL()},
		FlyTimeout:       5 * time.Second,
		GatewayPort:      e.Fly.GatewayPort(),
		WebhookHost:      "127.0.0.1",
		WebhookPort:      port,
		WebhookService:   "glaceon-webhook",
		WebhookConfig:    "glaceon",
		WebhookExtraSANs: []string{"127.0.0.1"},
		CertSecret:       "glaceon-webhook-tls",
		MetricsAddr:      "0",
		HealthAddr:       "0",
		Log:              logr.Discard(),
		// -count=N and benchmarks build one manager per run.
		SkipNameValidation: true,
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	e.Config = cfg
	for i, p := range ports {
		replicaCfg := cfg
		if i > 0 {
			replicaCfg.WebhookPort = p
		}
		m, err := manager.New(e.ManagerRESTConfig, replicaCfg)
		if err != nil {
			tb.Fatal(err)
		}
		e.Replicas = append(e.Replicas, m)
	}
	e.Manager = e.Replicas[0]
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, len(e.Replicas))
	for _, m := range e.Replicas {
		go func() { done <- m.Start(runCtx) }()
	}
	stopped := false
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		for range e.Replicas {
			if err := <-done; err != nil {
				tb.Errorf("manager: %v", err)
			}
		}
	}
	tb.Cleanup(e.Stop)
	// Ready as the kubelet would see it: certificate issued, caBundle
	// patched, webhook server listening.
	err = wait.PollUntilContextTimeout(runCtx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		for _, m := range e.Replicas {
			if !m.Certs.Ready() || m.GetWebhookServer().StartedChecker()(nil) != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		tb.Fatalf("manager not ready: %v", err)
	}
	if !opts.NoFlyOrg {
		e.WaitFlyOrgReady(tb, DefaultFlyOrg)
	}
	return e
}

// Stop stops the manager (idempotent; also run at cleanup).
func (e *Env) Stop() { e.stop() }

// SetToken creates or replaces the token Secret with token.
func (e *Env) SetToken(tb testing.TB, token string) {
	tb.Helper()
	ctx := context.Background()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: TokenSecret, Namespace: Namespace}, Data: map[string][]byte{"token": []byte(token)}}
	if err := e.Client.Create(ctx, s); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			tb.Fatal(err)
		}
		if err := e.Client.Update(ctx, s); err != nil {
			tb.Fatal(err)
		}
	}
}

// CreateFlyOrg creates a FlyOrg using the token Secret.
func (e *Env) CreateFlyOrg(tb testing.TB, name, slug string, namespaces []string, isDefault bool) *glaceonv1alpha1.FlyOrg {
	tb.Helper()
	org := &glaceonv1alpha1.FlyOrg{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: glaceonv1alpha1.FlyOrgSpec{
			Slug:           slug,
			TokenSecretRef: glaceonv1alpha1.SecretKeyRef{Name: TokenSecret, Key: "token"},
			Namespaces:     namespaces,
		},
	}
	if isDefault {
		org.Annotations = map[string]string{glaceonv1alpha1.AnnotationDefaultFlyOrg: "true"}
	}
	if err := e.Client.Create(context.Background(), org); err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatal(err)
	}
	return org
}

// FlyOrgReady returns the FlyOrg's Ready condition (nil if none yet).
func (e *Env) FlyOrgReady(tb testing.TB, name string) *metav1.Condition {
	tb.Helper()
	var org glaceonv1alpha1.FlyOrg
	if err := e.Client.Get(context.Background(), client.ObjectKey{Name: name}, &org); err != nil {
		tb.Fatal(err)
	}
	return meta.FindStatusCondition(org.Status.Conditions, glaceonv1alpha1.ConditionReady)
}

// WaitFlyOrgReady waits up to a minute for the FlyOrg's Ready=True.
func (e *Env) WaitFlyOrgReady(tb testing.TB, name string) {
	tb.Helper()
	var last *metav1.Condition
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		last = e.FlyOrgReady(tb, name)
		return last != nil && last.Status == metav1.ConditionTrue, nil
	})
	if err != nil {
		tb.Fatalf("FlyOrg %s not ready: %v (last condition %+v)", name, err, last)
	}
}

// FlyPeers lists the cluster's FlyPeers.
func (e *Env) FlyPeers(tb testing.TB) []glaceonv1alpha1.FlyPeer {
	tb.Helper()
	var list glaceonv1alpha1.FlyPeerList
	if err := e.Client.List(context.Background(), &list); err != nil {
		tb.Fatal(err)
	}
	return list.Items
}

// ApplyRBAC creates deploy/rbac's ServiceAccount, roles and bindings with
// the admin client c.
func ApplyRBAC(ctx context.Context, c client.Client) error {
	dir := filepath.Join(RepoRoot(), "deploy", "rbac")
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
		for _, doc := range strings.Split(string(data), "\n---") {
			var u unstructured.Unstructured
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				return fmt.Errorf("parse %s: %w", f, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if err := c.Create(ctx, &u); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("apply %s %s from %s: %w", u.GetKind(), u.GetName(), f, err)
			}
		}
	}
	return nil
}

// TenantClient returns a client for a user who holds the stock edit role
// in namespace only, as most tenants do.
func (e *Env) TenantClient(tb testing.TB, user, namespace string) client.Client {
	tb.Helper()
	c, err := client.New(e.UserConfig(tb, user, namespace, "edit"), client.Options{Scheme: e.scheme})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// UserConfig binds the stock clusterRole (view, edit or admin: all grant
// get on pods) to user in namespace and returns a config that impersonates
// user. It returns once the API server's authorizer honours the binding:
// RBAC reads bindings from an informer, so for a moment after the create
// the user is still forbidden, and a test that raced it failed at random.
func (e *Env) UserConfig(tb testing.TB, user, namespace, clusterRole string) *rest.Config {
	tb.Helper()
	ctx := context.Background()
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user + "-" + clusterRole, Namespace: namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}},
	}
	if err := e.Client.Create(ctx, rb); err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatal(err)
	}
	groups := []string{"system:authenticated"}
	WaitFor(tb, fmt.Sprintf("RBAC to let %s get pods in %s", user, namespace), func() bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               user,
			Groups:             groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: "get", Resource: "pods"},
		}}
		return e.Client.Create(ctx, sar) == nil && sar.Status.Allowed
	})
	cfg := rest.CopyConfig(e.ControlPlane.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return cfg
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

// ManagerDeployment creates the manager's Deployment (the manager itself
// runs out of cluster) and marks its pod Ready as a kubelet would.
func (e *Env) ManagerDeployment(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app.kubernetes.io/name": "glaceon"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "glaceon-manager", Namespace: Namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "glaceon"}}},
			},
		},
	}
	if err := e.Client.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	e.WaitManagerAvailable(t)
}

// WaitManagerAvailable marks the manager Deployment's pods Ready until it has an
// available replica.
func (e *Env) WaitManagerAvailable(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app.kubernetes.io/name": "glaceon"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "glaceon-manager", Namespace: Namespace}}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var pods corev1.PodList
		if err := e.Client.List(ctx, &pods, client.InNamespace(Namespace), client.MatchingLabels(labels)); err != nil {
			return false, err
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.Phase != corev1.PodRunning {
				now := metav1.Now()
				p.Status.Phase = corev1.PodRunning
				p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}
				if err := e.Client.Status().Update(ctx, p); err != nil {
					return false, nil
				}
			}
		}
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(dep), dep); err != nil {
			return false, err
		}
		return dep.Status.AvailableReplicas == 1, nil
	})
	if err != nil {
		t.Fatalf("manager Deployment not available: %v (status %+v)", err, dep.Status)
	}
}

// Pod is the tests' application pod: one container, an image no node
// pulls, and annotations as given (nil: none).
func Pod(namespace, name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}},
	}
}

// WaitFor polls cond every 100ms until it holds, and fails tb after a
// minute (the controllers involved are several, on shared cores).
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		tb.Fatalf("waiting for %s: %v", what, err)
	}
}

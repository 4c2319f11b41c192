package certs_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"gomodules.xyz/jsonpatch/v2"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/glaceon/glaceon/hack/controlplane"
	"github.com/glaceon/glaceon/webhook/certs"
)

const (
	namespace   = "glaceon-system"
	service     = "glaceon-webhook"
	secretName  = "glaceon-webhook-tls"
	mwcName     = "glaceon"
	raceSecret  = "race-certs"
	raceMWC     = "race"
	testNS      = "webhook-test"
	mutatedKey  = "certs.glaceon.fly/mutated"
	serviceHost = service + "." + namespace + ".svc"
)

// TestWithControlPlane runs the Manager as a least-privilege user against a
// real kube-apiserver, which calls the webhook over TLS with the caBundle
// the Manager publishes.
func TestWithControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the control plane from hack/control-plane.sh")
	}
	if os.Getenv("GLACEON_TEST_LOG") != "" {
		logf.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	} else {
		logf.SetLogger(logr.Discard())
	}
	cp := controlplane.StartForTest(t, controlplane.Options{NoControllerManager: true})
	admin, err := client.New(cp.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: namespace}},
		{ObjectMeta: metav1.ObjectMeta{Name: testNS, Labels: map[string]string{"certs-test": "on"}}},
	} {
		mustCreate(ctx, t, admin, ns)
	}
	restricted := leastPrivilegeUser(ctx, t, cp, admin)

	t.Run("serve, publish and recover", func(t *testing.T) { testServe(ctx, t, admin, restricted) })
	t.Run("two replicas racing", func(t *testing.T) { testRace(ctx, t, admin, restricted) })

	if leaks := waitNoLeaks(10 * time.Second); len(leaks) > 0 {
		t.Errorf("%d goroutines left after the managers stopped:\n%s", len(leaks), strings.Join(leaks, "\n\n"))
	}
}

// leastPrivilegeUser grants a new user exactly the RBAC documented in doc.go
// and returns its client configuration.
func leastPrivilegeUser(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, admin client.Client) *rest.Config {
	t.Helper()
	user, err := cp.Env.AddUser(envtest.User{Name: "glaceon-certs"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	subjects := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "glaceon-certs"}}
	mustCreate(ctx, t, admin, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "webhook-certs"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secretName, raceSecret},
				Verbs: []string{"get", "list", "watch", "update"}},
		},
	})
	mustCreate(ctx, t, admin, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "webhook-certs"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "webhook-certs"},
		Subjects:   subjects,
	})
	mustCreate(ctx, t, admin, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "webhook-certs"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{admissionregistrationv1.GroupName}, Resources: []string{"mutatingwebhookconfigurations"},
			ResourceNames: []string{mwcName, raceMWC}, Verbs: []string{"get", "list", "watch", "patch"},
		}},
	})
	mustCreate(ctx, t, admin, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "webhook-certs"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "webhook-certs"},
		Subjects:   subjects,
	})
	// The grant is as narrow as intended: listing all Secrets is forbidden.
	c, err := client.New(user.Config(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.List(ctx, &corev1.SecretList{}, client.InNamespace(namespace)); !apierrors.IsForbidden(err) {
		t.Fatalf("the restricted user may list Secrets (err %v)", err)
	}
	return user.Config()
}

func testServe(ctx context.Context, t *testing.T, admin client.Client, restricted *rest.Config) {
	port := freePort(t)
	mustCreate(ctx, t, admin, webhookConfig(mwcName, fmt.Sprintf("https://127.0.0.1:%d/mutate", port), map[string]string{"certs-test": "on"}))

	m, stop := startManager(t, restricted, certs.Options{
		SecretNamespace: namespace, SecretName: secretName, ServiceName: service,
		ExtraIPs:              []net.IP{net.ParseIP("127.0.0.1")},
		WebhookConfigurations: []string{mwcName},
	}, port)
	defer stop()
	waitReady(ctx, t, m)

	secret := getSecret(ctx, t, admin, secretName)
	bundle := secret.Data[certs.CACertKey]
	waitCABundle(ctx, t, admin, mwcName, bundle)
	if !bytes.Equal(m.CABundle(), bundle) {
		t.Error("CABundle() differs from ca.crt")
	}
	if err := m.ReadyzCheck(nil); err != nil {
		t.Errorf("readyz: %v", err)
	}

	// A client trusting only the caBundle verifies the Service name and the
	// loopback IP, and rejects any other name.
	leaf := dialLeaf(t, port, serviceHost, bundle)
	if !bytes.Equal(leaf.Raw, firstCert(t, secret.Data[certs.TLSCertKey]).Raw) {
		t.Error("the webhook server does not serve tls.crt")
	}
	dialLeaf(t, port, "", bundle)
	if _, err := dial(port, "other.example", bundle); err == nil {
		t.Error("the served certificate verified for a name it should not cover")
	}

	// The API server calls the webhook over TLS with the patched caBundle.
	expectMutated(ctx, t, admin, "first")

	t.Run("re-applied configuration is re-patched", func(t *testing.T) {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := admin.Get(ctx, client.ObjectKey{Name: mwcName}, mwc); err != nil {
			t.Fatal(err)
		}
		for i := range mwc.Webhooks {
			mwc.Webhooks[i].ClientConfig.CABundle = nil
		}
		if err := admin.Update(ctx, mwc); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		waitCABundle(ctx, t, admin, mwcName, bundle)
		t.Logf("re-patched within %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("deleted Secret is regenerated and served without restart", func(t *testing.T) {
		// Admissions go on through the whole rotation and must all pass.
		// (The API server reuses its TLS connection to the webhook, so a
		// short window would rarely show here; the order itself, publish
		// then serve, is checked by TestRotationPublishesBeforeServing.)
		admitCtx, stopAdmitting := context.WithCancel(ctx)
		admitted := make(chan []error, 1)
		go func() {
			var errs []error
			for i := 0; admitCtx.Err() == nil && i < 2000; i++ {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: fmt.Sprintf("during-rotation-%d", i)}}
				if err := admin.Create(admitCtx, cm); err != nil {
					if admitCtx.Err() == nil {
						errs = append(errs, err)
					}
				} else if cm.Labels[mutatedKey] != "true" {
					errs = append(errs, fmt.Errorf("%s created without the webhook's label", cm.Name))
				}
				time.Sleep(20 * time.Millisecond)
			}
			admitted <- errs
		}()
		time.Sleep(300 * time.Millisecond)
		if err := admin.Delete(ctx, secret); err != nil {
			t.Fatal(err)
		}
		var fresh *corev1.Secret
		eventually(ctx, t, "a new Secret", func() error {
			s := &corev1.Secret{}
			if err := admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: secretName}, s); err != nil {
				return err
			}
			if s.UID == secret.UID {
				return fmt.Errorf("still the old Secret")
			}
			fresh = s
			return nil
		})
		newBundle := fresh.Data[certs.CACertKey]
		if bytes.Equal(newBundle, bundle) {
			t.Fatal("the new Secret has the old CA")
		}
		waitCABundle(ctx, t, admin, mwcName, newBundle)
		want := firstCert(t, fresh.Data[certs.TLSCertKey])
		eventually(ctx, t, "the new certificate served", func() error {
			got, err := dial(port, serviceHost, newBundle)
			if err != nil {
				return err
			}
			if !got.Equal(want) {
				return fmt.Errorf("serving serial %x, want %x", got.SerialNumber, want.SerialNumber)
			}
			return nil
		})
		if _, err := dial(port, serviceHost, bundle); err == nil {
			t.Error("the new certificate verifies against the deleted CA")
		}
		time.Sleep(time.Second) // admissions go on after the switch
		stopAdmitting()
		if errs := <-admitted; len(errs) > 0 {
			t.Errorf("%d admissions failed during the rotation, the first: %v", len(errs), errs[0])
		}
		expectMutated(ctx, t, admin, "after-rotation")
	})
}

func testRace(ctx context.Context, t *testing.T, admin client.Client, restricted *rest.Config) {
	// The configuration matches no namespace: it only receives the bundle.
	mustCreate(ctx, t, admin, webhookConfig(raceMWC, "https://127.0.0.1:1/never", map[string]string{"certs-test": "never"}))
	opts := certs.Options{
		SecretNamespace: namespace, SecretName: raceSecret, ServiceName: service,
		WebhookConfigurations: []string{raceMWC},
	}
	var (
		wg       sync.WaitGroup
		managers [2]*certs.Manager
	)
	for i := range managers {
		m, stop := startManager(t, restricted, opts, 0)
		defer stop()
		managers[i] = m
		wg.Go(func() { waitReady(ctx, t, m) })
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	secret := getSecret(ctx, t, admin, raceSecret)
	want := firstCert(t, secret.Data[certs.TLSCertKey])
	for i, m := range managers {
		if !bytes.Equal(m.CABundle(), secret.Data[certs.CACertKey]) {
			t.Errorf("replica %d publishes a CA bundle that is not the Secret's", i)
		}
		c, err := m.GetCertificate(nil)
		if err != nil || !c.Leaf.Equal(want) {
			t.Errorf("replica %d does not serve the Secret's certificate (%v)", i, err)
		}
	}
	waitCABundle(ctx, t, admin, raceMWC, secret.Data[certs.CACertKey])
	// Settled: nobody rewrites the Secret afterwards.
	time.Sleep(2 * time.Second)
	if s := getSecret(ctx, t, admin, raceSecret); s.ResourceVersion != secret.ResourceVersion {
		t.Errorf("the Secret was rewritten after both replicas were ready (rv %s → %s)", secret.ResourceVersion, s.ResourceVersion)
	}
}

// startManager runs a controller-runtime manager with a certs.Manager and,
// if port > 0, a webhook server on 127.0.0.1:port that labels ConfigMaps.
func startManager(t *testing.T, cfg *rest.Config, opts certs.Options, port int) (*certs.Manager, func()) {
	t.Helper()
	m, err := certs.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	mopts := ctrl.Options{
		Logger:                 testr.NewWithOptions(t, testr.Options{LogTimestamp: true}),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Several managers share this process.
		Controller:              config.Controller{SkipNameValidation: ptr.To(true)},
		GracefulShutdownTimeout: ptr.To(10 * time.Second),
	}
	if port > 0 {
		mopts.WebhookServer = webhook.NewServer(webhook.Options{
			Host: "127.0.0.1", Port: port, TLSOpts: []func(*tls.Config){m.TLSOpts},
		})
	}
	mgr, err := ctrl.NewManager(cfg, mopts)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	if err := mgr.AddReadyzCheck("webhook-certs", m.ReadyzCheck); err != nil {
		t.Fatal(err)
	}
	if port > 0 {
		mgr.GetWebhookServer().Register("/mutate", &webhook.Admission{Handler: admission.HandlerFunc(
			func(context.Context, admission.Request) admission.Response {
				return admission.Patched("", jsonpatch.JsonPatchOperation{
					Operation: "add", Path: "/metadata/labels", Value: map[string]string{mutatedKey: "true"},
				})
			})})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	return m, func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("manager: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("manager did not stop within 30s")
			}
		})
	}
}

func webhookConfig(name, url string, nsLabels map[string]string) *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "configmaps.certs.glaceon.fly",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: nsLabels},
			FailurePolicy:           new(admissionregistrationv1.Fail),
			SideEffects:             new(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          new(int32(5)),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
}

// expectMutated creates a ConfigMap the webhook must label. The API server
// may take a moment to notice a new caBundle, so failures are retried.
func expectMutated(ctx context.Context, t *testing.T, c client.Client, name string) {
	t.Helper()
	eventually(ctx, t, "a ConfigMap mutated by the webhook", func() error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name}}
		if err := c.Create(ctx, cm); err != nil {
			return err
		}
		if cm.Labels[mutatedKey] != "true" {
			return fmt.Errorf("created without the webhook's label: %v", cm.Labels)
		}
		return nil
	})
}

func waitReady(ctx context.Context, t *testing.T, m *certs.Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := m.WaitForReady(ctx); err != nil {
		t.Error(err)
	}
}

func waitCABundle(ctx context.Context, t *testing.T, c client.Client, name string, want []byte) {
	t.Helper()
	eventually(ctx, t, "caBundle "+name+" patched", func() error {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, mwc); err != nil {
			return err
		}
		for _, w := range mwc.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, want) {
				return fmt.Errorf("webhook %s caBundle is %d bytes, not ca.crt", w.Name, len(w.ClientConfig.CABundle))
			}
		}
		return nil
	})
}

// eventually retries f for up to 20s.
func eventually(ctx context.Context, t *testing.T, what string, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dial connects over TLS trusting only bundle and returns the verified leaf.
// An empty serverName verifies the IP address dialled.
func dial(port int, serverName string, bundle []byte) (*x509.Certificate, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return nil, fmt.Errorf("no certificate in the bundle")
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{
		RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12,
	}}
	conn, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

func dialLeaf(t *testing.T, port int, serverName string, bundle []byte) *x509.Certificate {
	t.Helper()
	leaf, err := dial(port, serverName, bundle)
	if err != nil {
		t.Fatalf("TLS to the webhook server as %q: %v", serverName, err)
	}
	return leaf
}

func getSecret(ctx context.Context, t *testing.T, c client.Client, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, s); err != nil {
		t.Fatalf("get Secret %s: %v", name, err)
	}
	return s
}

func firstCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustCreate(ctx context.Context, t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(ctx, obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// leakMarkers identify goroutines a stopped manager must not leave behind.
// The control plane's process runners (internal/testing) are excluded: they
// live until the control plane stops, after this check.
var leakMarkers = []string{
	"sigs.k8s.io/controller-runtime/pkg/cache", "sigs.k8s.io/controller-runtime/pkg/internal/controller",
	"sigs.k8s.io/controller-runtime/pkg/manager", "sigs.k8s.io/controller-runtime/pkg/webhook",
	"sigs.k8s.io/controller-runtime/pkg/cluster", "sigs.k8s.io/controller-runtime/pkg/internal/source",
	"k8s.io/client-go/tools/cache", "k8s.io/client-go/util/workqueue", "glaceon/webhook/certs.",
}

func waitNoLeaks(d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 8<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaks []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "waitNoLeaks") {
				continue
			}
			for _, m := range leakMarkers {
				if strings.Contains(g, m) {
					leaks = append(leaks, g)
					break
				}
			}
		}
		if len(leaks) == 0 || time.Now().After(deadline) {
			return leaks
		}
		time.Sleep(100 * time.Millisecond)
	}
}

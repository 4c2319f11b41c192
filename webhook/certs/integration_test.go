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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	glaceonadmission "github.com/glaceon/glaceon/webhook/admission"
	"github.com/glaceon/glaceon/webhook/certs"
	"github.com/glaceon/glaceon/webhook/manager"
	"github.com/glaceon/glaceon/webhook/manager/managertest"
)

const (
	namespace   = managertest.Namespace
	service     = "glaceon-webhook"     // managertest's WebhookService
	secretName  = "glaceon-webhook-tls" // managertest's CertSecret, the one deploy/rbac lets the manager update
	mwcName     = "glaceon"             // deploy/webhook's configuration, the one deploy/rbac lets the manager patch
	testNS      = "webhook-test"
	mutatedKey  = "certs.glaceon.fly/mutated"
	serviceHost = service + "." + namespace + ".svc"
)

// TestWithControlPlane runs glaceon's manager (managertest: manager.New,
// as its ServiceAccount under deploy/rbac) against a real kube-apiserver,
// which calls the webhook over TLS with the caBundle the certificate
// manager publishes. A ConfigMap webhook added to glaceon's configuration,
// served by the manager's webhook server, shows every admission.
func TestWithControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the control plane from hack/control-plane.sh")
	}
	if os.Getenv("GLACEON_TEST_LOG") != "" {
		logf.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	} else {
		logf.SetLogger(logr.Discard())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := managertest.StartWith(t, managertest.Options{
		AsServiceAccount: true,
		Configure: func(cfg *manager.Config) {
			cfg.Log = testr.NewWithOptions(t, testr.Options{LogTimestamp: true})
			cfg.AdmissionMiddleware = labelConfigMaps
		},
	})
	mustCreate(ctx, t, e.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS, Labels: map[string]string{"certs-test": "on"}}})
	checkLeastPrivilege(ctx, t, e)

	t.Run("serve, publish and recover", func(t *testing.T) { testServe(ctx, t, e) })
	t.Run("two replicas racing", func(t *testing.T) { testRace(ctx, t, e) })

	if leaks := waitNoLeaks(10 * time.Second); len(leaks) > 0 {
		t.Errorf("%d goroutines left after the managers stopped:\n%s", len(leaks), strings.Join(leaks, "\n\n"))
	}
}

// labelConfigMaps answers ConfigMap admissions with a label and passes
// everything else to the pod webhook.
func labelConfigMaps(next admission.Handler) admission.Handler {
	return admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
		if req.Kind.Kind != "ConfigMap" {
			return next.Handle(ctx, req)
		}
		return admission.Patched("", jsonpatch.JsonPatchOperation{
			Operation: "add", Path: "/metadata/labels", Value: map[string]string{mutatedKey: "true"},
		})
	})
}

// checkLeastPrivilege shows the manager's grant is as narrow as intended:
// it may not list Secrets outside its namespace, nor update a Secret other
// than its certificate's, nor patch another webhook configuration.
func checkLeastPrivilege(ctx context.Context, t *testing.T, e *managertest.Env) {
	t.Helper()
	c, err := client.New(e.ManagerRESTConfig, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.List(ctx, &corev1.SecretList{}, client.InNamespace(testNS)); !apierrors.IsForbidden(err) {
		t.Fatalf("the manager may list Secrets in %s (err %v)", testNS, err)
	}
	token := &corev1.Secret{}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: managertest.TokenSecret}, token); err != nil {
		t.Fatal(err)
	}
	if err := c.Update(ctx, token); !apierrors.IsForbidden(err) {
		t.Fatalf("the manager may update Secret %s (err %v)", managertest.TokenSecret, err)
	}
	other := webhookConfig("other", "https://127.0.0.1:1/never", map[string]string{"certs-test": "never"})
	mustCreate(ctx, t, e.Client, other)
	patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"patched":"yes"}}}`))
	if err := c.Patch(ctx, other, patch); !apierrors.IsForbidden(err) {
		t.Fatalf("the manager may patch another webhook configuration (err %v)", err)
	}
	if err := e.Client.Delete(ctx, other); err != nil {
		t.Fatal(err)
	}
}

func testServe(ctx context.Context, t *testing.T, e *managertest.Env) {
	admin, m, port := e.Client, e.Manager.Certs, e.Config.WebhookPort
	defer e.Stop()
	addConfigMapWebhook(ctx, t, admin, fmt.Sprintf("https://127.0.0.1:%d%s", port, glaceonadmission.Path))
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
		// The API server's admission plugin follows the object through its
		// own informer, a moment later: until then it calls the webhook
		// with no caBundle and fails. An admission that passes shows it
		// has the bundle again, so that the next subtest's admissions see
		// only the rotation (without this, its first one failed about once
		// in ten full runs).
		expectMutated(ctx, t, admin, "after-re-patch")
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

// testRace starts two managers at once with no certificate Secret yet, as
// a Deployment's replicas rolled out together do.
func testRace(ctx context.Context, t *testing.T, first *managertest.Env) {
	admin := first.Client
	if err := admin.Delete(ctx, getSecret(ctx, t, admin, secretName)); err != nil {
		t.Fatal(err)
	}
	e := managertest.StartWith(t, managertest.Options{
		ControlPlane: first.ControlPlane, Fly: first.Fly, AsServiceAccount: true, Replicas: 2,
		Configure: func(cfg *manager.Config) {
			cfg.Log = testr.NewWithOptions(t, testr.Options{LogTimestamp: true})
		},
	})
	defer e.Stop()
	var wg sync.WaitGroup
	for _, m := range e.Replicas {
		wg.Go(func() { waitReady(ctx, t, m.Certs) })
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	secret := getSecret(ctx, t, admin, secretName)
	want := firstCert(t, secret.Data[certs.TLSCertKey])
	for i, m := range e.Replicas {
		if !bytes.Equal(m.Certs.CABundle(), secret.Data[certs.CACertKey]) {
			t.Errorf("replica %d publishes a CA bundle that is not the Secret's", i)
		}
		c, err := m.Certs.GetCertificate(nil)
		if err != nil || !c.Leaf.Equal(want) {
			t.Errorf("replica %d does not serve the Secret's certificate (%v)", i, err)
		}
	}
	waitCABundle(ctx, t, admin, mwcName, secret.Data[certs.CACertKey])
	// Settled: nobody rewrites the Secret afterwards.
	time.Sleep(2 * time.Second)
	if s := getSecret(ctx, t, admin, secretName); s.ResourceVersion != secret.ResourceVersion {
		t.Errorf("the Secret was rewritten after both replicas were ready (rv %s → %s)", secret.ResourceVersion, s.ResourceVersion)
	}
}

// addConfigMapWebhook adds to glaceon's webhook configuration one that
// sends ConfigMaps created in testNS to url; the manager re-patches its
// caBundle.
func addConfigMapWebhook(ctx context.Context, t *testing.T, c client.Client, url string) {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKey{Name: mwcName}, mwc); err != nil {
		t.Fatal(err)
	}
	mwc.Webhooks = append(mwc.Webhooks, webhookConfig(mwcName, url, map[string]string{"certs-test": "on"}).Webhooks...)
	if err := c.Update(ctx, mwc); err != nil {
		t.Fatal(err)
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

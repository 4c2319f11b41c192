package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	dto "github.com/prometheus/client_model/go"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := admissionregistrationv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func testMWC(name string, webhooks ...string) *admissionregistrationv1.MutatingWebhookConfiguration {
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, w := range webhooks {
		mwc.Webhooks = append(mwc.Webhooks, admissionregistrationv1.MutatingWebhook{
			Name:                    w,
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: new("https://127.0.0.1:1/x")},
			SideEffects:             new(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
		})
	}
	return mwc
}

// newTestManager returns a Manager on a fake client and clock.
func newTestManager(t *testing.T, c client.Client, clk *clocktesting.FakePassiveClock) *Manager {
	t.Helper()
	m, err := New(Options{
		SecretNamespace: "glaceon-system", SecretName: "certs",
		ServiceName: "glaceon-webhook", ExtraIPs: []net.IP{net.ParseIP("127.0.0.1")},
		WebhookConfigurations: []string{"glaceon-webhook"},
		CAValidity:            3000 * time.Hour, ServingValidity: 900 * time.Hour,
		Clock: clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	m.client, m.apiReader = c, c
	return m
}

func reconcileOnce(t *testing.T, m *Manager) reconcile.Result {
	t.Helper()
	ctx := logf.IntoContext(context.Background(), testr.New(t))
	res, err := m.Reconcile(ctx, reconcile.Request{})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	return res
}

func getSecret(t *testing.T, c client.Client) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "glaceon-system", Name: "certs"}, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func assertInjected(t *testing.T, c client.Client, want []byte) {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "glaceon-webhook"}, mwc); err != nil {
		t.Fatal(err)
	}
	for _, w := range mwc.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, want) {
			t.Errorf("webhook %s caBundle is not ca.crt", w.Name)
		}
	}
}

func servedLeaf(t *testing.T, m *Manager) *x509.Certificate {
	t.Helper()
	c, err := m.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

func gauge(t *testing.T, cert string) float64 {
	t.Helper()
	var out dto.Metric
	if err := certExpiry.WithLabelValues(cert).Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetGauge().GetValue()
}

func TestReconcileLifecycle(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(t0)
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(testMWC("glaceon-webhook", "a.glaceon.fly", "b.glaceon.fly")).Build()
	m := newTestManager(t, c, clk)

	if m.Ready() || m.ReadyzCheck(nil) == nil {
		t.Fatal("ready before the first reconcile")
	}
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Fatal("a certificate is served before the first reconcile")
	}

	res := reconcileOnce(t, m)
	s := getSecret(t, c)
	for _, k := range []string{CACertKey, CAKeyKey, TLSCertKey, TLSKeyKey} {
		if len(s.Data[k]) == 0 {
			t.Errorf("Secret lacks %s", k)
		}
	}
	assertInjected(t, c, s.Data[CACertKey])
	if !m.Ready() || m.ReadyzCheck(nil) != nil {
		t.Error("not ready after the Secret was written and the caBundle patched")
	}
	if !bytes.Equal(m.CABundle(), s.Data[CACertKey]) {
		t.Error("CABundle() is not ca.crt")
	}
	first := servedLeaf(t, m)
	if !bytes.Equal(first.Raw, mustCerts(t, s.Data[TLSCertKey])[0].Raw) {
		t.Error("served certificate is not tls.crt")
	}
	if res.RequeueAfter != DefaultResyncPeriod {
		t.Errorf("RequeueAfter = %v, want the resync period", res.RequeueAfter)
	}
	if got := gauge(t, "serving"); got != float64(first.NotAfter.Unix()) {
		t.Errorf("serving expiry gauge = %v, want %v", got, first.NotAfter.Unix())
	}

	// Nothing to do: no write.
	rv := s.ResourceVersion
	reconcileOnce(t, m)
	if getSecret(t, c).ResourceVersion != rv {
		t.Error("an idle reconcile rewrote the Secret")
	}

	// Someone re-applies the configuration with an empty caBundle.
	mwc := testMWC("glaceon-webhook", "a.glaceon.fly", "b.glaceon.fly")
	old := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "glaceon-webhook"}, old); err != nil {
		t.Fatal(err)
	}
	mwc.ResourceVersion = old.ResourceVersion
	if err := c.Update(context.Background(), mwc); err != nil {
		t.Fatal(err)
	}
	reconcileOnce(t, m)
	assertInjected(t, c, s.Data[CACertKey])

	// Renewal time: the serving certificate is replaced, the CA kept.
	clk.SetTime(renewAt(first).Add(time.Second))
	reconcileOnce(t, m)
	s2 := getSecret(t, c)
	renewed := servedLeaf(t, m)
	if renewed.Equal(first) || !bytes.Equal(s2.Data[CAKeyKey], s.Data[CAKeyKey]) {
		t.Error("serving certificate not renewed, or the CA changed with it")
	}

	// CA rotation: the bundle carries the new and the old CA, published and served.
	ca := mustCerts(t, s.Data[CACertKey])[0]
	clk.SetTime(m.policy.caRotateAt(ca).Add(time.Second))
	reconcileOnce(t, m)
	s3 := getSecret(t, c)
	bundle := mustCerts(t, s3.Data[CACertKey])
	if len(bundle) != 2 || !bundle[1].Equal(ca) {
		t.Fatalf("after CA rotation the bundle holds %d CAs, want the new and the old", len(bundle))
	}
	assertInjected(t, c, s3.Data[CACertKey])
	// Published, not yet served: the API servers get caPropagation to see it.
	if !servedLeaf(t, m).Equal(renewed) {
		t.Error("a certificate from the new CA was served in the reconcile that published it")
	}
	clk.SetTime(clk.Now().Add(caPropagation))
	reconcileOnce(t, m)
	if err := servedLeaf(t, m).CheckSignatureFrom(bundle[0]); err != nil {
		t.Errorf("served certificate not from the new CA: %v", err)
	}
	if got := gauge(t, "ca"); got != float64(bundle[0].NotAfter.Unix()) {
		t.Errorf("CA expiry gauge = %v, want %v", got, bundle[0].NotAfter.Unix())
	}
}

func TestReconcileAdoptsConcurrentWrite(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(t0)
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(testMWC("glaceon-webhook", "a.glaceon.fly")).Build()
	winner := newTestManager(t, c, clk)
	reconcileOnce(t, winner)

	// The loser's cache has not seen the winner's Secret yet: its Create
	// fails with AlreadyExists and it must adopt the winner's Secret.
	stale := interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				return apierrors.NewNotFound(corev1.Resource("secrets"), key.Name)
			}
			return cl.Get(ctx, key, obj, opts...)
		},
	})
	loser := newTestManager(t, stale, clk)
	loser.apiReader = c
	reconcileOnce(t, loser)

	s := getSecret(t, c)
	if !bytes.Equal(loser.CABundle(), s.Data[CACertKey]) || !bytes.Equal(winner.CABundle(), s.Data[CACertKey]) {
		t.Error("the replicas publish different CA bundles")
	}
	if !servedLeaf(t, loser).Equal(servedLeaf(t, winner)) {
		t.Error("the replicas serve different certificates")
	}
	if !loser.Ready() {
		t.Error("loser not ready")
	}
}

func TestReconcileWaitsForWebhookConfiguration(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(t0)
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).Build()
	m := newTestManager(t, c, clk)
	reconcileOnce(t, m)
	if m.Ready() {
		t.Error("ready without a webhook configuration to publish the CA to")
	}
	if _, err := m.GetCertificate(nil); err != nil {
		t.Errorf("certificate not served while waiting: %v", err)
	}
	if err := c.Create(context.Background(), testMWC("glaceon-webhook", "a.glaceon.fly")); err != nil {
		t.Fatal(err)
	}
	reconcileOnce(t, m)
	if !m.Ready() {
		t.Error("not ready once the configuration exists")
	}
	assertInjected(t, c, getSecret(t, c).Data[CACertKey])
}

func TestReconcileKeepsForeignKeys(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(t0)
	pre := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "glaceon-system", Name: "certs"},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"note": []byte("kept"), TLSCertKey: []byte("garbage")},
	}
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(pre, testMWC("glaceon-webhook", "a")).Build()
	m := newTestManager(t, c, clk)
	reconcileOnce(t, m)
	s := getSecret(t, c)
	if string(s.Data["note"]) != "kept" || s.Type != corev1.SecretTypeOpaque {
		t.Error("a pre-created Secret lost its other keys or its type")
	}
	if _, err := parseCertsPEM(s.Data[TLSCertKey]); err != nil {
		t.Errorf("garbage tls.crt not replaced: %v", err)
	}
}

func mustCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	certs, err := parseCertsPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

// TestRotationPublishesBeforeServing: at no moment may the served
// certificate be one the API server cannot verify with the caBundle it
// holds, nor with the one it held just before (it reads webhook
// configurations from an informer, so a patch reaches it a little later).
// Checked on every patch of the caBundle and after every reconcile, on a
// CA rotation and after the certificate Secret is deleted.
func TestRotationPublishesBeforeServing(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(t0)
	base := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(testMWC("glaceon-webhook", "a.glaceon.fly")).Build()
	var m *Manager
	var violations []string
	stored := func() []byte {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := base.Get(context.Background(), client.ObjectKey{Name: "glaceon-webhook"}, mwc); err != nil {
			t.Fatal(err)
		}
		return mwc.Webhooks[0].ClientConfig.CABundle
	}
	// verifies reports whether the served certificate chains to bundle.
	verifies := func(bundle []byte) error {
		c := m.cert.Load()
		if c == nil {
			return nil // nothing served: nothing to fail
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(bundle) {
			return errors.New("empty caBundle")
		}
		// The fake clock jumps months at a time without the renewals in
		// between: check the chain at a time the leaf is valid.
		at := c.Leaf.NotBefore.Add(time.Minute)
		_, err := c.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "glaceon-webhook.glaceon-system.svc", CurrentTime: at})
		return err
	}
	check := func(when string, bundle []byte) {
		if err := verifies(bundle); err != nil {
			violations = append(violations, when+": "+err.Error())
		}
	}
	c := interceptor.NewClient(base, interceptor.Funcs{
		Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			check("before a caBundle patch", stored())
			return cl.Patch(ctx, obj, patch, opts...)
		},
	})
	m = newTestManager(t, c, clk)
	var lastPublished []byte
	step := func(what string) {
		t.Helper()
		reconcileOnce(t, m)
		now := stored()
		check(what+": with the caBundle now", now)
		if lastPublished != nil {
			check(what+": with the caBundle an API server may still hold", lastPublished)
		}
		lastPublished = now
	}
	step("first start")
	first := servedLeaf(t, m)

	// CA rotation.
	ca := mustCerts(t, getSecret(t, base).Data[CACertKey])[0]
	clk.SetTime(m.policy.caRotateAt(ca).Add(time.Second))
	step("CA rotation")
	clk.SetTime(clk.Now().Add(caPropagation))
	step("CA rotation, after propagation")
	rotated := servedLeaf(t, m)
	if rotated.Equal(first) {
		t.Fatal("the certificate from the new CA is never served")
	}

	// The Secret is deleted: a new CA is issued; the CA of the certificate
	// being served stays trusted until that certificate is replaced.
	if err := base.Delete(context.Background(), getSecret(t, base)); err != nil {
		t.Fatal(err)
	}
	step("Secret deleted")
	bundle := mustCerts(t, getSecret(t, base).Data[CACertKey])
	if len(bundle) < 2 || !slices.ContainsFunc(bundle[1:], func(c *x509.Certificate) bool { return rotated.CheckSignatureFrom(c) == nil }) {
		t.Errorf("after the Secret was deleted the bundle (%d CAs) dropped the CA of the certificate being served", len(bundle))
	}
	clk.SetTime(clk.Now().Add(caPropagation))
	step("Secret deleted, after propagation")
	if servedLeaf(t, m).Equal(rotated) {
		t.Error("the new certificate is never served after the Secret was deleted")
	}
	for _, v := range violations {
		t.Error(v)
	}
}

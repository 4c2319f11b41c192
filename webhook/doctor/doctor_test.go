package doctor_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/doctor"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/manager"
	"github.com/glaceon/glaceon/webhook/manager/managertest"
	"github.com/glaceon/glaceon/webhook/peers"
)

func failedChecks(results []doctor.Result) []string {
	var out []string
	for _, r := range results {
		if r.Status != doctor.OK {
			out = append(out, r.Check+"="+string(r.Status))
		}
	}
	sort.Strings(out)
	return out
}

func find(t *testing.T, results []doctor.Result, check string) doctor.Result {
	t.Helper()
	for _, r := range results {
		if r.Check == check && r.Status != doctor.OK {
			return r
		}
	}
	t.Fatalf("no failing %s in %+v", check, results)
	return doctor.Result{}
}

func expect(t *testing.T, results []doctor.Result, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := failedChecks(results); strings.Join(got, " ") != strings.Join(want, " ") {
		for _, r := range results {
			t.Logf("%s %s: %s | %s | %s", r.Status.Symbol(), r.Check, r.Message, r.Cause, r.Fix)
		}
		t.Fatalf("failing checks %v, want %v", got, want)
	}
}

// newDoctor is a Doctor for e with opts, reaching the pod proxy as admin.
func newDoctor(t *testing.T, e *managertest.Env, opts doctor.Options) *doctor.Doctor {
	t.Helper()
	opts.RESTConfig = e.ControlPlane.Config
	opts.Fly.BaseURL = e.Fly.URL()
	d, err := doctor.New(e.Client, opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDoctor(t *testing.T) {
	// Injected sidecars serve health and metrics on ports free on the
	// test's own pod IP.
	podIP := podNetwork(t)
	healthPort, metricsPort := freePortOn(t, podIP), freePortOn(t, podIP)
	e := managertest.Start(t, func(c *manager.Config) {
		c.Inject.HealthPort, c.Inject.MetricsPort = healthPort, metricsPort
		// One sweep at start, none while the test seeds orphans.
		c.SweepInterval = time.Hour
	})
	e.ManagerDeployment(t)
	ctx := context.Background()
	d := newDoctor(t, e, doctor.Options{})

	t.Run("healthy", func(t *testing.T) {
		e.Fly.ResetRequestCounts()
		res := d.All(ctx)
		for _, r := range res {
			t.Logf("%s %s: %s", r.Status.Symbol(), r.Check, r.Message)
		}
		expect(t, res)
		// doctor's own Fly calls (the token check, the orphans' list) are
		// read-only, and the dry run makes no peer.
		counts := e.Fly.RequestCounts()
		for k, n := range counts {
			switch k.Op {
			case "organization", "organization.wireGuardPeers", "organization.wireGuardPeer":
			default:
				t.Errorf("doctor caused %d %s requests at the Fly double", n, k.Op)
			}
		}
		if counts[flyapitest.RequestKey{Op: "organization.wireGuardPeers", Org: "personal"}] == 0 {
			t.Errorf("doctor never listed the org's peers: %v", counts)
		}
	})

	t.Run("Fly peers of this cluster with no FlyPeer", func(t *testing.T) {
		var kubeSystem corev1.Namespace
		if err := e.Client.Get(ctx, client.ObjectKey{Name: "kube-system"}, &kubeSystem); err != nil {
			t.Fatal(err)
		}
		cluster := peers.ClusterHash(kubeSystem.UID)
		ours := []string{"k8s-team-web-" + cluster + "-abcdef", "k8s-team-db-" + cluster + "-zz2345"}
		// A person's peer and another cluster's in the same org and with
		// the same prefix: not this cluster's, never reported.
		others := []string{"k8s-laptop-1", "k8s-team-web-other1-abcdef"}
		for _, name := range append(append([]string(nil), ours...), others...) {
			keys, err := wgquick.GenerateKeyPair()
			if err != nil {
				t.Fatal(err)
			}
			// Seeded at the double directly, as a leak would be.
			if _, err := e.Fly.AddPeer("personal", name, keys.Public.String()); err != nil {
				t.Fatal(err)
			}
		}
		res := d.All(ctx)
		expect(t, res, doctor.CheckFlyPeersOrphaned+"=warn")
		r := find(t, res, doctor.CheckFlyPeersOrphaned)
		for _, name := range ours {
			if !strings.Contains(r.Message, name) {
				t.Errorf("orphan %s not reported: %+v", name, r)
			}
		}
		for _, name := range others {
			if strings.Contains(r.Message, name) {
				t.Errorf("%s is not this cluster's but reported: %+v", name, r)
			}
		}
		if !strings.HasPrefix(r.Message, "2 Fly peer(s)") || !strings.Contains(r.Cause, "sweeper removes them") {
			t.Errorf("orphans reported as %+v", r)
		}
		for _, name := range append(ours, others...) {
			if err := e.Fly.RemovePeer("personal", name); err != nil {
				t.Fatal(err)
			}
		}
		expect(t, d.All(ctx))
	})

	t.Run("manager scaled to 0", func(t *testing.T) {
		var dep appsv1.Deployment
		key := client.ObjectKey{Namespace: managertest.Namespace, Name: "glaceon-manager"}
		if err := e.Client.Get(ctx, key, &dep); err != nil {
			t.Fatal(err)
		}
		dep.Spec.Replicas = ptr.To[int32](0)
		if err := e.Client.Update(ctx, &dep); err != nil {
			t.Fatal(err)
		}
		res := d.All(ctx)
		expect(t, res, doctor.CheckDeployment+"=fail")
		if r := find(t, res, doctor.CheckDeployment); !strings.Contains(r.Fix, "--replicas=2") {
			t.Errorf("fix %q does not say how to scale up", r.Fix)
		}
		if err := e.Client.Get(ctx, key, &dep); err != nil {
			t.Fatal(err)
		}
		dep.Spec.Replicas = ptr.To[int32](1)
		if err := e.Client.Update(ctx, &dep); err != nil {
			t.Fatal(err)
		}
		e.WaitManagerAvailable(t)
		expect(t, d.All(ctx))
	})

	t.Run("FlyPeer stuck in Provisioning", func(t *testing.T) {
		// A FlyPeer whose admission died: created, never provisioned. The
		// doctor's clock runs ahead so it is past the threshold now.
		fp := &glaceonv1alpha1.FlyPeer{
			ObjectMeta: metav1.ObjectMeta{Name: "k8s-stuck"},
			Spec: glaceonv1alpha1.FlyPeerSpec{
				Org:       managertest.DefaultFlyOrg,
				PublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
				Pod:       glaceonv1alpha1.FlyPeerPod{Namespace: "default", Name: "gone"},
			},
		}
		if err := e.Client.Create(ctx, fp); err != nil {
			t.Fatal(err)
		}
		fp.Status.Phase = glaceonv1alpha1.FlyPeerProvisioning
		if err := e.Client.Status().Update(ctx, fp); err != nil {
			t.Fatal(err)
		}
		later := newDoctor(t, e, doctor.Options{Now: func() time.Time { return time.Now().Add(10 * time.Minute) }})
		res := later.All(ctx)
		expect(t, res, doctor.CheckFlyPeersStuck+"=fail")
		if r := find(t, res, doctor.CheckFlyPeersStuck); !strings.Contains(r.Cause, "k8s-stuck Provisioning") || !strings.Contains(r.Fix, "sweeper") {
			t.Errorf("stuck FlyPeer reported as %+v", r)
		}
		// Within the threshold it is not stuck.
		expect(t, d.All(ctx))
		if err := e.Client.Delete(ctx, fp); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pods", func(t *testing.T) {
		ns := e.Namespace(t, "team")
		// Not annotated.
		plain := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: ns},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}
		if err := e.Client.Create(ctx, plain); err != nil {
			t.Fatal(err)
		}
		res := d.Pod(ctx, ns, "plain")
		expect(t, res, doctor.CheckPodInjected+"=fail")
		if r := find(t, res, doctor.CheckPodInjected); !strings.Contains(r.Cause, "no "+inject.AnnotationTarget) {
			t.Errorf("not annotated pod reported as %+v", r)
		}
		// Denied: its pods never exist; the Event on the ReplicaSet says why.
		labels := map[string]string{"app": "web"}
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{inject.AnnotationTarget: "db.internal:5432", inject.AnnotationOrg: "nope"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
				},
			},
		}
		if err := e.Client.Create(ctx, dep); err != nil {
			t.Fatal(err)
		}
		var r doctor.Result
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			res = d.Pod(ctx, ns, "web")
			r = res[0]
			return r.Check == doctor.CheckPodDenials && r.Status == doctor.Fail && strings.Contains(r.Cause, "nope"), nil
		})
		if err != nil {
			t.Fatalf("denied Deployment reported as %+v", res)
		}
		expect(t, res, doctor.CheckPodDenials+"=fail")
		// The install is still healthy.
		expect(t, d.All(ctx))
	})

	t.Run("sidecars through the pod proxy", func(t *testing.T) { testPodSidecar(t, e, d, podIP) })

	t.Run("FlyOrg with a rejected token", func(t *testing.T) {
		e.SetToken(t, "rejected-token")
		var res []doctor.Result
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			res = d.Orgs(ctx)
			return doctor.Failed(res), nil
		})
		if err != nil {
			t.Fatalf("rejected token not reported: %+v", res)
		}
		res = d.All(ctx)
		// The dry run is denied for the same reason: the default FlyOrg is
		// not Ready.
		// doctor's own read-only call with the token is rejected too, so
		// no org could be listed for orphans.
		expect(t, res, doctor.CheckFlyOrgReady+"=fail", doctor.CheckDryRun+"=fail", doctor.CheckFlyOrgToken+"=fail", doctor.CheckFlyPeersOrphaned+"=warn")
		if r := find(t, res, doctor.CheckFlyOrgReady); !strings.Contains(r.Cause, "Unauthorized") || !strings.Contains(r.Fix, "fly tokens create") {
			t.Errorf("rejected token reported as %+v", r)
		}
		if r := find(t, res, doctor.CheckFlyOrgToken); !strings.Contains(r.Message, "rejected the token of FlyOrg personal") || !strings.Contains(r.Fix, "fly tokens create org -o personal") {
			t.Errorf("doctor's token check reported as %+v", r)
		}
		e.SetToken(t, e.Fly.Token())
		e.WaitFlyOrgReady(t, managertest.DefaultFlyOrg)
		expect(t, d.All(ctx))
	})

	// The manager heals a wrong caBundle or certificate within
	// milliseconds, so these faults are made with it stopped; the dry run
	// then fails as well (nothing serves the webhook).
	e.Stop()
	mwcKey := client.ObjectKey{Name: "glaceon"}
	var mwc admissionv1.MutatingWebhookConfiguration
	if err := e.Client.Get(ctx, mwcKey, &mwc); err != nil {
		t.Fatal(err)
	}
	goodBundle := mwc.Webhooks[0].ClientConfig.CABundle

	t.Run("wrong caBundle", func(t *testing.T) {
		other, _ := selfSigned(t, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		setBundle(t, e, other)
		res := d.All(ctx)
		expect(t, res, doctor.CheckCABundle+"=fail", doctor.CheckDryRun+"=fail")
		if r := find(t, res, doctor.CheckCABundle); !strings.Contains(r.Cause, "127.0.0.1") || !strings.Contains(r.Fix, "rollout restart") {
			t.Errorf("wrong caBundle reported as %+v", r)
		}
		setBundle(t, e, goodBundle)
	})

	t.Run("expired certificate", func(t *testing.T) {
		certPEM, keyPEM := selfSigned(t, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
		var secret corev1.Secret
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: managertest.Namespace, Name: e.Config.CertSecret}, &secret); err != nil {
			t.Fatal(err)
		}
		secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey] = certPEM, keyPEM
		if err := e.Client.Update(ctx, &secret); err != nil {
			t.Fatal(err)
		}
		setBundle(t, e, certPEM)
		res := d.All(ctx)
		expect(t, res, doctor.CheckCertExpiry+"=fail", doctor.CheckDryRun+"=fail")
		if r := find(t, res, doctor.CheckCertExpiry); !strings.Contains(r.Message, "expired") || !strings.Contains(r.Fix, "deleting the Secret") {
			t.Errorf("expired certificate reported as %+v", r)
		}
	})
}

func setBundle(t *testing.T, e *managertest.Env, bundle []byte) {
	t.Helper()
	var mwc admissionv1.MutatingWebhookConfiguration
	if err := e.Client.Get(context.Background(), client.ObjectKey{Name: "glaceon"}, &mwc); err != nil {
		t.Fatal(err)
	}
	mwc.Webhooks[0].ClientConfig.CABundle = bundle
	if err := e.Client.Update(context.Background(), &mwc); err != nil {
		t.Fatal(err)
	}
}

// selfSigned is a certificate for 127.0.0.1 (what the test webhook URL
// names) valid from notBefore to notAfter, and its key, in PEM.
func selfSigned(t *testing.T, notBefore, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "doctor-test"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

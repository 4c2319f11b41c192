package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// ControllerName names the reconciler in logs and metrics.
const ControllerName = "webhook-certs"

// minRequeue keeps a clock that is already past a deadline from spinning.
const minRequeue = time.Second

// caPropagation is how long a new caBundle is given to reach every API
// server (each reads webhook configurations from its own informer) before
// a certificate that needs it is served.
const caPropagation = 2 * time.Second

// Manager issues, stores, serves and publishes the webhook's serving
// certificate. Create it with New before the controller-runtime manager
// (whose webhook server takes TLSOpts), then call SetupWithManager.
//
// Every replica runs it (it does not need leader election): each one
// validates the Secret, writes it with optimistic concurrency when it must
// be (re)issued, serves whatever valid certificate the Secret holds, and
// patches the caBundle, which is idempotent.
type Manager struct {
	opts   Options
	policy policy
	key    types.NamespacedName

	cert   atomic.Pointer[tls.Certificate]
	bundle atomic.Pointer[[]byte]

	readyOnce sync.Once
	readyCh   chan struct{}

	// published is the bundle last seen in every webhook configuration,
	// since publishedAt (only Reconcile touches them: one at a time).
	published   []byte
	publishedAt time.Time

	// Set by SetupWithManager (or by tests).
	client    client.Client // writes; reads from the narrow cache
	apiReader client.Reader // uncached reads after a lost write race
}

// New validates opts and returns a Manager that serves no certificate until
// it is added to a manager with SetupWithManager and that manager starts.
func New(opts Options) (*Manager, error) {
	opts.setDefaults()
	opts.ExtraDNSNames = slices.Clone(opts.ExtraDNSNames)
	opts.ExtraIPs = slices.Clone(opts.ExtraIPs)
	opts.WebhookConfigurations = slices.Clone(opts.WebhookConfigurations)
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("webhook certificate options: %w", err)
	}
	return &Manager{
		opts: opts,
		policy: policy{
			caName:          opts.CAName,
			caValidity:      opts.CAValidity,
			servingValidity: opts.ServingValidity,
			caOverlap:       opts.CAOverlap,
			dnsNames:        opts.DNSNames(),
			ips:             opts.ExtraIPs,
		},
		key:     types.NamespacedName{Namespace: opts.SecretNamespace, Name: opts.SecretName},
		readyCh: make(chan struct{}),
	}, nil
}

// SetupWithManager adds to mgr a cache restricted to the one Secret and
// the named webhook configurations (so the manager's own cache never lists
// Secrets cluster-wide, and RBAC can name the objects), and a reconciler
// that runs on every replica, at start, on any change to those objects, and
// at least every ResyncPeriod.
func (m *Manager) SetupWithManager(mgr ctrl.Manager) error {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return err
	}
	if err := admissionregistrationv1.AddToScheme(scheme); err != nil {
		return err
	}
	webhooks := cache.ByObject{}
	if len(m.opts.WebhookConfigurations) == 1 {
		webhooks.Field = nameSelector(m.opts.WebhookConfigurations[0])
	}
	cl, err := cluster.New(mgr.GetConfig(), func(o *cluster.Options) {
		o.Scheme = scheme
		o.HTTPClient = mgr.GetHTTPClient()
		o.MapperProvider = func(*rest.Config, *http.Client) (meta.RESTMapper, error) { return mgr.GetRESTMapper(), nil }
		o.Logger = mgr.GetLogger().WithName(ControllerName)
		o.Cache.ByObject = map[client.Object]cache.ByObject{
			&corev1.Secret{}: {
				Namespaces: map[string]cache.Config{m.key.Namespace: {}},
				Field:      nameSelector(m.key.Name),
			},
			&admissionregistrationv1.MutatingWebhookConfiguration{}: webhooks,
		}
	})
	if err != nil {
		return fmt.Errorf("create the webhook certificate cache: %w", err)
	}
	// A cluster is started with the manager's caches, before controllers.
	if err := mgr.Add(cl); err != nil {
		return err
	}
	m.client = cl.GetClient()
	m.apiReader = cl.GetAPIReader()

	// Whatever changed, there is one thing to reconcile.
	secretEvents := handler.TypedEnqueueRequestsFromMapFunc(func(context.Context, *corev1.Secret) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: m.key}}
	})
	webhookEvents := handler.TypedEnqueueRequestsFromMapFunc(func(context.Context, *admissionregistrationv1.MutatingWebhookConfiguration) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: m.key}}
	})
	// A missing Secret produces no event, so reconcile once at start.
	kick := source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(reconcile.Request{NamespacedName: m.key})
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false), MaxConcurrentReconciles: 1}).
		WatchesRawSource(source.Kind(cl.GetCache(), &corev1.Secret{}, secretEvents)).
		WatchesRawSource(source.Kind(cl.GetCache(), &admissionregistrationv1.MutatingWebhookConfiguration{}, webhookEvents)).
		WatchesRawSource(kick).
		Complete(m)
}

func nameSelector(name string) fields.Selector {
	return fields.OneTermEqualSelector("metadata.name", name)
}

// TLSOpts is a webhook.Options.TLSOpts entry: it makes the webhook server
// take its certificate from the Manager on every handshake, so a rotation
// needs no restart.
func (m *Manager) TLSOpts(cfg *tls.Config) {
	cfg.GetCertificate = m.GetCertificate
}

// GetCertificate returns the current serving certificate, or an error until
// one is loaded.
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := m.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("webhook serving certificate not loaded yet")
}

// CABundle returns the PEM CA bundle last published, or nil.
func (m *Manager) CABundle() []byte {
	if b := m.bundle.Load(); b != nil {
		return bytes.Clone(*b)
	}
	return nil
}

// Ready reports whether a serving certificate is loaded and the caBundle
// has been patched into every webhook configuration once. It stays true
// afterwards: a later re-patch is a matter of seconds and should not flap
// every replica's readiness at once.
func (m *Manager) Ready() bool {
	select {
	case <-m.readyCh:
		return true
	default:
		return false
	}
}

// ReadyzCheck is a healthz.Checker for the manager's readyz endpoint.
func (m *Manager) ReadyzCheck(*http.Request) error {
	switch {
	case m.Ready():
		return nil
	case m.cert.Load() == nil:
		return errors.New("webhook serving certificate not loaded yet")
	default:
		return fmt.Errorf("caBundle not yet patched into MutatingWebhookConfiguration %v", m.opts.WebhookConfigurations)
	}
}

// WaitForReady blocks until Ready or ctx is done.
func (m *Manager) WaitForReady(ctx context.Context) error {
	select {
	case <-m.readyCh:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for webhook certificates: %w", ctx.Err())
	}
}

// Reconcile brings the Secret, the served certificate and the caBundles in
// line. The request is ignored: there is only one thing to reconcile.
func (m *Manager) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	log := logf.FromContext(ctx)
	trusted, err := m.trustedCAs(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	d, err := m.ensureSecret(ctx, log, trusted)
	if err != nil {
		return reconcile.Result{}, err
	}
	// Publish first, serve second: a certificate from a new CA is served
	// only once the caBundle holds that CA and has had time to reach the
	// API servers. Until then the current certificate stays, and it stays
	// trusted: the bundle keeps its CA for the overlap.
	injected, err := m.injectCABundle(ctx, log, d.state.bundle)
	if err != nil {
		if m.cert.Load() == nil {
			m.load(log, d.state) // nothing served yet: nothing to break
		}
		return reconcile.Result{}, err
	}
	now := m.opts.Clock.Now()
	if injected && !bytes.Equal(m.published, d.state.bundle) {
		m.published, m.publishedAt = bytes.Clone(d.state.bundle), now
	}
	if cur := m.cert.Load(); injected && cur != nil && !bytes.Equal(cur.Certificate[0], d.state.cert.Certificate[0]) {
		if wait := caPropagation - now.Sub(m.publishedAt); wait > 0 {
			log.V(1).Info("New caBundle published; serving the new certificate shortly", "after", wait)
			return reconcile.Result{RequeueAfter: wait}, nil
		}
	}
	m.load(log, d.state)
	if injected {
		m.readyOnce.Do(func() {
			log.Info("Webhook certificate ready")
			close(m.readyCh)
		})
	}
	// RequeueAfter rides a monotonic timer; ResyncPeriod bounds it so that a
	// stalled timer (a suspended VM) delays a renewal by at most that much.
	wait := min(d.next.Sub(m.opts.Clock.Now()), m.opts.ResyncPeriod)
	return reconcile.Result{RequeueAfter: max(wait, minRequeue)}, nil
}

// ensureSecret returns the valid content of the Secret, creating or
// updating it first if needed. Writes are optimistic: when another replica
// wrote first (AlreadyExists or Conflict), its Secret is re-read from the
// API server and adopted if valid.
func (m *Manager) ensureSecret(ctx context.Context, log logr.Logger, trusted []*x509.Certificate) (*decision, error) {
	secret := &corev1.Secret{}
	if err := m.client.Get(ctx, m.key, secret); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("get Secret %s: %w", m.key, err)
		}
		secret = nil
	}
	for attempt := 0; ; attempt++ {
		var data map[string][]byte
		if secret != nil {
			data = secret.Data
		}
		d, err := m.policy.evaluateTrusting(data, m.opts.Clock.Now(), trusted)
		if err != nil {
			return nil, err
		}
		if !d.changed {
			return d, nil
		}
		err = m.writeSecret(ctx, secret, d.data)
		if err == nil {
			log.Info("Wrote webhook certificate Secret", "secret", m.key,
				"newCA", d.newCA, "newServingCertificate", d.newServing, "reasons", d.reasons,
				"caNotAfter", d.state.caNotAfter, "servingNotAfter", d.state.servingNotAfter)
			return d, nil
		}
		if attempt > 0 || !(apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err)) {
			return nil, fmt.Errorf("write Secret %s: %w", m.key, err)
		}
		log.V(1).Info("Secret written concurrently; re-reading it", "secret", m.key)
		secret = &corev1.Secret{}
		if err := m.apiReader.Get(ctx, m.key, secret); err != nil {
			if !apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("get Secret %s: %w", m.key, err)
			}
			secret = nil
		}
	}
}

func (m *Manager) writeSecret(ctx context.Context, existing *corev1.Secret, data map[string][]byte) error {
	if existing == nil {
		return m.client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: m.key.Namespace,
				Name:      m.key.Name,
				Labels:    map[string]string{"app.kubernetes.io/managed-by": "glaceon"},
			},
			Type: corev1.SecretTypeTLS,
			Data: data,
		})
	}
	// Update carries the resourceVersion read: a concurrent writer makes it
	// fail with Conflict instead of being overwritten. Keys other than ours
	// are kept.
	s := existing.DeepCopy()
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	for k, v := range data {
		s.Data[k] = v
	}
	return m.client.Update(ctx, s)
}

// load makes st the served certificate and the published bundle.
func (m *Manager) load(log logr.Logger, st *material) {
	if cur := m.cert.Load(); cur == nil || !bytes.Equal(cur.Certificate[0], st.cert.Certificate[0]) {
		m.cert.Store(st.cert)
		log.Info("Serving webhook certificate", "serial", st.cert.Leaf.SerialNumber.Text(16),
			"notAfter", st.servingNotAfter, "dnsNames", st.cert.Leaf.DNSNames)
	}
	bundle := bytes.Clone(st.bundle)
	m.bundle.Store(&bundle)
	certExpiry.WithLabelValues("ca").Set(float64(st.caNotAfter.Unix()))
	certExpiry.WithLabelValues("serving").Set(float64(st.servingNotAfter.Unix()))
}

// trustedCAs are the CAs in the caBundles of the named webhook
// configurations now, and in the bundle this replica last published.
func (m *Manager) trustedCAs(ctx context.Context) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	add := func(pemBytes []byte) {
		certs, err := parseCertsPEM(pemBytes)
		if err != nil {
			return // not ours to judge; it is replaced anyway
		}
		for _, c := range certs {
			if !slices.ContainsFunc(out, c.Equal) {
				out = append(out, c)
			}
		}
	}
	if b := m.bundle.Load(); b != nil {
		add(*b)
	}
	for _, name := range m.opts.WebhookConfigurations {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := m.client.Get(ctx, client.ObjectKey{Name: name}, mwc); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("get MutatingWebhookConfiguration %s: %w", name, err)
		}
		for _, wh := range mwc.Webhooks {
			add(wh.ClientConfig.CABundle)
		}
	}
	return out, nil
}

// jsonPatchOp is one RFC 6902 operation.
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// injectCABundle sets every webhook's clientConfig.caBundle in the named
// configurations to bundle. It reports whether all of them hold it. The
// JSON patch tests each webhook's name before setting its caBundle, so a
// concurrent edit that reorders the list fails the patch instead of
// misplacing the bundle; replicas patching the same value do not conflict.
func (m *Manager) injectCABundle(ctx context.Context, log logr.Logger, bundle []byte) (bool, error) {
	all := true
	for _, name := range m.opts.WebhookConfigurations {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := m.client.Get(ctx, client.ObjectKey{Name: name}, mwc); err != nil {
			if apierrors.IsNotFound(err) {
				// Its creation is an event: no need to poll.
				log.Info("MutatingWebhookConfiguration not found; waiting for it", "mutatingWebhookConfiguration", name)
				all = false
				continue
			}
			return false, fmt.Errorf("get MutatingWebhookConfiguration %s: %w", name, err)
		}
		if mwc.DeletionTimestamp != nil {
			all = false
			continue
		}
		var ops []jsonPatchOp
		for i, wh := range mwc.Webhooks {
			if bytes.Equal(wh.ClientConfig.CABundle, bundle) {
				continue
			}
			ops = append(ops,
				jsonPatchOp{Op: "test", Path: fmt.Sprintf("/webhooks/%d/name", i), Value: wh.Name},
				jsonPatchOp{Op: "add", Path: fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), Value: bundle})
		}
		if len(ops) == 0 {
			continue
		}
		patch, err := json.Marshal(ops)
		if err != nil {
			return false, err
		}
		if err := m.client.Patch(ctx, mwc, client.RawPatch(types.JSONPatchType, patch)); err != nil {
			if apierrors.IsNotFound(err) {
				all = false
				continue
			}
			return false, fmt.Errorf("patch caBundle of MutatingWebhookConfiguration %s: %w", name, err)
		}
		log.Info("Patched caBundle", "mutatingWebhookConfiguration", name, "webhooks", len(ops)/2)
	}
	return all, nil
}

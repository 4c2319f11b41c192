package doctor

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"reflect"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/glaceon/glaceon/deploy/crd"
	deploywebhook "github.com/glaceon/glaceon/deploy/webhook"
	"github.com/glaceon/glaceon/webhook/inject"
)

// webhookName is the one webhook of the shipped configuration.
const webhookName = "pods.glaceon.fly"

// Install runs the install group: CRDs, the manager, the webhook.
func (d *Doctor) Install(ctx context.Context) []Result {
	out := []Result{d.checkCRDs(ctx), d.checkDeployment(ctx)}
	mwc, wh, res := d.checkWebhookConfig(ctx)
	out = append(out, res)
	if wh != nil {
		out = append(out, d.checkCertificate(ctx, wh)...)
		out = append(out, d.checkRules(mwc, wh))
	}
	return d.skip(append(out, d.checkDryRun(ctx)))
}

func (d *Doctor) checkCRDs(ctx context.Context) Result {
	const fix = "install the CRDs of this glaceon release: `kubectl apply -k deploy/crd` (or `helm upgrade` the chart, which ships them)"
	files, err := fs.Glob(crd.Files, "*.yaml")
	if err != nil || len(files) == 0 {
		return failed(GroupInstall, CheckCRDs, "this binary holds no CRDs", fmt.Sprintf("embedded CRDs: %v", err), "rebuild glaceon")
	}
	var kinds, problems []string
	for _, f := range files {
		data, _ := crd.Files.ReadFile(f)
		var want unstructured.Unstructured
		if err := yaml.Unmarshal(data, &want.Object); err != nil {
			return failed(GroupInstall, CheckCRDs, "this binary's CRDs do not parse", err.Error(), "rebuild glaceon")
		}
		kind, _, _ := unstructured.NestedString(want.Object, "spec", "names", "kind")
		kinds = append(kinds, kind)
		got := &unstructured.Unstructured{}
		got.SetAPIVersion("apiextensions.k8s.io/v1")
		got.SetKind("CustomResourceDefinition")
		if err := d.c.Get(ctx, client.ObjectKey{Name: want.GetName()}, got); err != nil {
			if apierrors.IsNotFound(err) {
				problems = append(problems, fmt.Sprintf("CRD %s is not installed", want.GetName()))
				continue
			}
			return failed(GroupInstall, CheckCRDs, "cannot read the CRDs", err.Error(), "run doctor as a user who may get customresourcedefinitions")
		}
		if p := compareVersions(want.Object, got.Object); p != "" {
			problems = append(problems, fmt.Sprintf("CRD %s %s", want.GetName(), p))
		}
	}
	if len(problems) > 0 {
		return failed(GroupInstall, CheckCRDs, "CRDs missing or from another glaceon version", strings.Join(problems, "; "), fix)
	}
	return ok(GroupInstall, CheckCRDs, "%s installed as this binary expects", strings.Join(kinds, ", "))
}

// compareVersions says how the installed CRD's versions differ from the
// embedded one's: each must be served with the same schema.
func compareVersions(want, got map[string]any) string {
	index := func(obj map[string]any) map[string]any {
		vs, _, _ := unstructured.NestedSlice(obj, "spec", "versions")
		m := map[string]any{}
		for _, v := range vs {
			if v, ok := v.(map[string]any); ok {
				m[fmt.Sprint(v["name"])] = v
			}
		}
		return m
	}
	have := index(got)
	for name, w := range index(want) {
		g, ok := have[name].(map[string]any)
		if !ok {
			return fmt.Sprintf("does not have version %s", name)
		}
		if served, _ := g["served"].(bool); !served {
			return fmt.Sprintf("does not serve version %s", name)
		}
		if !reflect.DeepEqual(normalize(w.(map[string]any)["schema"]), normalize(g["schema"])) {
			return fmt.Sprintf("has another schema for %s than this binary (installed from another glaceon version)", name)
		}
	}
	return ""
}

// normalize makes YAML-parsed and API-read values comparable (numbers).
func normalize(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

func (d *Doctor) checkDeployment(ctx context.Context) Result {
	ns, name := d.opts.Namespace, d.opts.Deployment
	var dep appsv1.Deployment
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &dep); err != nil {
		if apierrors.IsNotFound(err) {
			return failed(GroupInstall, CheckDeployment, fmt.Sprintf("Deployment %s/%s not found", ns, name),
				"glaceon's manager is not installed in this namespace", "install glaceon (`kubectl apply -k deploy/` or the Helm chart), or pass --glaceon-namespace")
		}
		return failed(GroupInstall, CheckDeployment, "cannot read the manager's Deployment", err.Error(), "run doctor as a user who may get deployments in "+ns)
	}
	want := int32(1)
	if dep.Spec.Replicas != nil {
		want = *dep.Spec.Replicas
	}
	logs := fmt.Sprintf("`kubectl -n %s describe deployment %s` and `kubectl -n %s logs deployment/%s`", ns, name, ns, name)
	switch {
	case want == 0:
		return failed(GroupInstall, CheckDeployment, fmt.Sprintf("Deployment %s/%s is scaled to 0", ns, name),
			"no manager runs: annotated pods are refused (the webhook fails closed) and FlyPeers are not released",
			fmt.Sprintf("`kubectl -n %s scale deployment %s --replicas=2`", ns, name))
	case dep.Status.AvailableReplicas == 0:
		return failed(GroupInstall, CheckDeployment, fmt.Sprintf("Deployment %s/%s has no available replica (0/%d)", ns, name, want),
			"the manager's pods are not ready: annotated pods are refused (the webhook fails closed)", "see why: "+logs)
	case dep.Status.AvailableReplicas < want:
		return warned(GroupInstall, CheckDeployment, fmt.Sprintf("Deployment %s/%s has %d/%d replicas available", ns, name, dep.Status.AvailableReplicas, want),
			"a replica is not ready; the webhook still answers", "see why: "+logs)
	}
	return ok(GroupInstall, CheckDeployment, "Deployment %s/%s available (%d/%d)", ns, name, dep.Status.AvailableReplicas, want)
}

func (d *Doctor) checkWebhookConfig(ctx context.Context) (*admissionv1.MutatingWebhookConfiguration, *admissionv1.MutatingWebhook, Result) {
	var mwc admissionv1.MutatingWebhookConfiguration
	if err := d.c.Get(ctx, client.ObjectKey{Name: d.opts.WebhookConfig}, &mwc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, failed(GroupInstall, CheckWebhookConfig, fmt.Sprintf("MutatingWebhookConfiguration %s not found", d.opts.WebhookConfig),
				"pods are not injected at all", "install deploy/webhook (`kubectl apply -k deploy/` or the Helm chart)")
		}
		return nil, nil, failed(GroupInstall, CheckWebhookConfig, "cannot read the MutatingWebhookConfiguration", err.Error(), "run doctor as a user who may get mutatingwebhookconfigurations")
	}
	for i := range mwc.Webhooks {
		if mwc.Webhooks[i].Name == webhookName {
			return &mwc, &mwc.Webhooks[i], ok(GroupInstall, CheckWebhookConfig, "MutatingWebhookConfiguration %s has webhook %s", mwc.Name, webhookName)
		}
	}
	return &mwc, nil, failed(GroupInstall, CheckWebhookConfig, fmt.Sprintf("MutatingWebhookConfiguration %s has no webhook %s", mwc.Name, webhookName),
		"it was edited or comes from another release", "re-apply deploy/webhook from this release")
}

// checkCertificate verifies the serving certificate the manager holds in
// its Secret (the manager serves exactly what the Secret holds) against
// the caBundle the API server trusts, for the name the API server dials.
// The API server's service proxy would terminate TLS itself, so it cannot
// show the certificate served; reading the Secret works the same in a
// cluster and with an out-of-cluster manager, and the dry run checks the
// live path end to end.
func (d *Doctor) checkCertificate(ctx context.Context, wh *admissionv1.MutatingWebhook) []Result {
	restart := fmt.Sprintf("the manager patches the caBundle itself: check it runs (`kubectl -n %s logs deployment/%s`); restarting it re-publishes the bundle (`kubectl -n %s rollout restart deployment %s`)",
		d.opts.Namespace, d.opts.Deployment, d.opts.Namespace, d.opts.Deployment)
	host, err := dialedHost(wh.ClientConfig)
	if err != nil {
		return []Result{failed(GroupInstall, CheckCABundle, "the webhook's clientConfig is invalid", err.Error(), "re-apply deploy/webhook from this release")}
	}
	pool := x509.NewCertPool()
	if len(wh.ClientConfig.CABundle) == 0 || !pool.AppendCertsFromPEM(wh.ClientConfig.CABundle) {
		return []Result{failed(GroupInstall, CheckCABundle, "the webhook's caBundle is empty or holds no certificate",
			"the API server cannot verify the webhook: every annotated pod is refused", restart)}
	}
	var secret corev1.Secret
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: d.opts.Namespace, Name: d.opts.CertSecret}, &secret); err != nil {
		msg := fmt.Sprintf("cannot read Secret %s/%s: %v", d.opts.Namespace, d.opts.CertSecret, err)
		if apierrors.IsNotFound(err) {
			return []Result{failed(GroupInstall, CheckCABundle, msg, "the manager has not issued its certificate", restart)}
		}
		return []Result{warned(GroupInstall, CheckCABundle, "the serving certificate was not checked",
			msg, "run doctor as a user who may read Secrets in "+d.opts.Namespace+", or rely on the dry-run check")}
	}
	certs, err := parseCerts(secret.Data[corev1.TLSCertKey])
	if err != nil || len(certs) == 0 {
		return []Result{failed(GroupInstall, CheckCABundle, fmt.Sprintf("Secret %s/%s holds no valid %s", d.opts.Namespace, d.opts.CertSecret, corev1.TLSCertKey),
			fmt.Sprint(err), "delete the Secret: the manager issues a new certificate")}
	}
	leaf := certs[0]
	now := d.opts.Now()
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	var out []Result
	_, verr := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: host, CurrentTime: leaf.NotBefore.Add(time.Second)})
	if verr != nil {
		out = append(out, failed(GroupInstall, CheckCABundle, "the webhook's caBundle does not verify the certificate the manager serves",
			fmt.Sprintf("verify the certificate for %s: %v; the API server refuses the webhook's TLS and every annotated pod", host, verr), restart))
	} else {
		out = append(out, ok(GroupInstall, CheckCABundle, "caBundle verifies the served certificate for %s", host))
	}
	switch left := leaf.NotAfter.Sub(now); {
	case left <= 0:
		out = append(out, failed(GroupInstall, CheckCertExpiry, fmt.Sprintf("the webhook's certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339)),
			"the manager did not renew it (not running, or cannot write its Secret); the API server refuses the webhook",
			fmt.Sprintf("check the manager runs and may update Secret %s/%s; deleting the Secret makes it issue a new one", d.opts.Namespace, d.opts.CertSecret)))
	case left < d.opts.ExpiryWarning:
		out = append(out, warned(GroupInstall, CheckCertExpiry, fmt.Sprintf("the webhook's certificate expires in %s", left.Round(time.Minute)),
			"the manager renews it well before expiry; it has not", fmt.Sprintf("check the manager's logs (`kubectl -n %s logs deployment/%s`)", d.opts.Namespace, d.opts.Deployment)))
	default:
		out = append(out, ok(GroupInstall, CheckCertExpiry, "certificate valid until %s", leaf.NotAfter.UTC().Format(time.RFC3339)))
	}
	return out
}

// dialedHost is the name the API server verifies the webhook's certificate for.
func dialedHost(cc admissionv1.WebhookClientConfig) (string, error) {
	if cc.URL != nil {
		u, err := url.Parse(*cc.URL)
		if err != nil {
			return "", fmt.Errorf("clientConfig.url: %w", err)
		}
		return u.Hostname(), nil
	}
	if cc.Service == nil {
		return "", errors.New("clientConfig has neither url nor service")
	}
	return cc.Service.Name + "." + cc.Service.Namespace + ".svc", nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// checkRules compares what decides which pods reach the webhook with the
// shipped configuration.
func (d *Doctor) checkRules(mwc *admissionv1.MutatingWebhookConfiguration, wh *admissionv1.MutatingWebhook) Result {
	var shipped admissionv1.MutatingWebhookConfiguration
	if err := yaml.Unmarshal(deploywebhook.Configuration, &shipped); err != nil || len(shipped.Webhooks) == 0 {
		return failed(GroupInstall, CheckWebhookRules, "this binary's webhook configuration does not parse", fmt.Sprint(err), "rebuild glaceon")
	}
	want := shipped.Webhooks[0]
	var diffs []string
	if !reflect.DeepEqual(normalize(want.MatchConditions), normalize(wh.MatchConditions)) {
		diffs = append(diffs, "matchConditions")
	}
	if !reflect.DeepEqual(normalize(want.NamespaceSelector), normalize(wh.NamespaceSelector)) {
		diffs = append(diffs, "namespaceSelector")
	}
	if !reflect.DeepEqual(normalize(want.Rules), normalize(wh.Rules)) {
		diffs = append(diffs, "rules")
	}
	if len(diffs) > 0 {
		return warned(GroupInstall, CheckWebhookRules, fmt.Sprintf("webhook %s: %s differ from the shipped configuration", webhookName, strings.Join(diffs, ", ")),
			"pods may be sent to the webhook that glaceon does not expect, or opted-in pods skipped", fmt.Sprintf("compare with deploy/webhook (`kubectl get mutatingwebhookconfiguration %s -o yaml`); re-apply it unless the change is intended", mwc.Name))
	}
	return ok(GroupInstall, CheckWebhookRules, "matchConditions, namespaceSelector and rules as shipped")
}

// ProbeTarget is the target of the dry-run pod; the dry run makes no peer
// and never dials it.
const ProbeTarget = "glaceon-doctor.flycast:80"

func (d *Doctor) checkDryRun(ctx context.Context) Result {
	ns := d.opts.ProbeNamespace
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "glaceon-doctor-",
			Namespace:    ns,
			Annotations:  map[string]string{inject.AnnotationTarget: ProbeTarget},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
	err := d.c.Create(ctx, pod, client.DryRunAll)
	if err != nil {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "failed calling webhook"):
			return failed(GroupInstall, CheckDryRun, "the API server could not call the webhook", msg,
				fmt.Sprintf("the manager is not reachable or its TLS is not trusted: see %s and %s above; `kubectl -n %s get pods,endpoints`", CheckDeployment, CheckCABundle, d.opts.Namespace))
		case strings.Contains(msg, "glaceon"):
			return failed(GroupInstall, CheckDryRun, fmt.Sprintf("the webhook denied an annotated pod in namespace %s", ns), msg,
				"the denial names the fix; a FlyOrg that is not Ready is shown by the orgs checks")
		}
		return failed(GroupInstall, CheckDryRun, fmt.Sprintf("dry-run create of a pod in %s failed", ns), msg, "pass --probe-namespace with a namespace you may create pods in")
	}
	if _, injected := pod.Annotations[inject.AnnotationInjected]; !injected {
		return failed(GroupInstall, CheckDryRun, fmt.Sprintf("an annotated pod in namespace %s was admitted without injection", ns),
			"the webhook was not called: its matchConditions or namespaceSelector exclude the pod, or the configuration is missing",
			"see "+CheckWebhookRules+" and "+CheckWebhookConfig+" above")
	}
	return ok(GroupInstall, CheckDryRun, "the webhook injected a dry-run pod in %s (no peer made)", ns)
}

// Package doctor holds the checks of `glaceon doctor`: each reads the
// cluster (and, for the dry run, asks the API server to admit a pod) and
// returns one Result with, on failure, the cause and the fix.
package doctor

import (
	"context"
	"fmt"
	"slices"
	"time"

	"k8s.io/client-go/rest"

	"github.com/glaceon/glaceon/flyapi"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Status is a check's outcome.
type Status string

// Outcomes of a check.
const (
	OK   Status = "ok"
	Fail Status = "fail"
	Warn Status = "warn"
)

// Symbol is the one-character mark printed before a check.
func (s Status) Symbol() string {
	switch s {
	case OK:
		return "✔"
	case Fail:
		return "✖"
	}
	return "‼"
}

// Groups of checks.
const (
	GroupInstall = "install"
	GroupOrgs    = "orgs"
	GroupPod     = "pod"
)

// Names of the checks, stable for scripts reading -o json.
const (
	CheckCRDs             = "crds"
	CheckDeployment       = "manager-deployment"
	CheckWebhookConfig    = "webhook-configuration"
	CheckCABundle         = "webhook-ca-bundle"
	CheckCertExpiry       = "webhook-certificate-expiry"
	CheckWebhookRules     = "webhook-rules"
	CheckDryRun           = "webhook-dry-run"
	CheckFlyOrgs          = "flyorgs"
	CheckFlyOrgReady      = "flyorg-ready"
	CheckFlyPeersStuck    = "flypeers-stuck"
	CheckFlyOrgToken      = "flyorg-token"
	CheckFlyPeersOrphaned = "fly-peers-orphaned"
	CheckPodInjected      = "pod-injected"
	CheckPodFlyPeer       = "pod-flypeer"
	CheckPodDenials       = "pod-denials"
	CheckPodSidecarReady  = "pod-sidecar-ready"
	CheckPodSidecarTunnel = "pod-sidecar-tunnel"
)

// Result is one check's outcome.
type Result struct {
	Group   string `json:"group"`
	Check   string `json:"check"`
	Status  Status `json:"status"`
	Message string `json:"message"`
	// Cause and Fix are set when Status is not OK.
	Cause string `json:"cause,omitempty"`
	Fix   string `json:"fix,omitempty"`
}

// Options names what doctor looks at; zero values are the shipped install.
type Options struct {
	// Namespace is glaceon's own namespace (glaceon-system).
	Namespace string
	// Deployment is the manager's Deployment (glaceon-manager).
	Deployment string
	// WebhookConfig is the MutatingWebhookConfiguration (glaceon).
	WebhookConfig string
	// CertSecret holds the webhook's serving certificate (glaceon-webhook-tls).
	CertSecret string
	// ProbeNamespace is where the dry-run pod is admitted (default).
	ProbeNamespace string
	// StuckAfter is how long a FlyPeer may stay Provisioning or Releasing
	// before it is reported (5m).
	StuckAfter time.Duration
	// ExpiryWarning is how close to expiry the certificate is reported (7 days).
	ExpiryWarning time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	// Fly is the template of the Fly API clients doctor makes with each
	// FlyOrg's token (BaseURL; the token comes from the FlyOrg's Secret).
	Fly flyapi.Options
	// PeerPrefix and ClusterName are the manager's --peer-prefix and
	// --cluster-name; empty: read from the manager Deployment's arguments,
	// else the manager's defaults.
	PeerPrefix, ClusterName string
	// RESTConfig reaches the API server's pod proxy (doctor pod reads the
	// sidecar's health and metrics ports through it); nil skips those
	// checks with a warning.
	RESTConfig *rest.Config
	// Skip names checks that do not apply (e.g. manager-deployment for a
	// manager run out of cluster): they are reported as warnings, never
	// failures.
	Skip []string
}

func (o Options) withDefaults() Options {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.Namespace, "glaceon-system")
	def(&o.Deployment, "glaceon-manager")
	def(&o.WebhookConfig, "glaceon")
	def(&o.CertSecret, "glaceon-webhook-tls")
	def(&o.ProbeNamespace, "default")
	if o.StuckAfter == 0 {
		o.StuckAfter = 5 * time.Minute
	}
	if o.ExpiryWarning == 0 {
		o.ExpiryWarning = 7 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Doctor runs checks with a client of the person running it.
type Doctor struct {
	c     client.Client
	opts  Options
	proxy *podProxy // nil without Options.RESTConfig
}

// New returns a Doctor reading the cluster through c (its scheme must hold
// client-go's types and glaceon's v1alpha1).
func New(c client.Client, opts Options) (*Doctor, error) {
	d := &Doctor{c: c, opts: opts.withDefaults()}
	if opts.RESTConfig != nil {
		p, err := newPodProxy(opts.RESTConfig)
		if err != nil {
			return nil, fmt.Errorf("pod proxy: %w", err)
		}
		d.proxy = p
	}
	return d, nil
}

func ok(group, check, format string, args ...any) Result {
	return Result{Group: group, Check: check, Status: OK, Message: fmt.Sprintf(format, args...)}
}

func failed(group, check, message, cause, fix string) Result {
	return Result{Group: group, Check: check, Status: Fail, Message: message, Cause: cause, Fix: fix}
}

func warned(group, check, message, cause, fix string) Result {
	return Result{Group: group, Check: check, Status: Warn, Message: message, Cause: cause, Fix: fix}
}

// Failed reports whether any result failed.
func Failed(results []Result) bool {
	for _, r := range results {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// All runs the install and orgs groups.
func (d *Doctor) All(ctx context.Context) []Result {
	return append(d.Install(ctx), d.Orgs(ctx)...)
}

// skip turns the results of skipped checks into warnings that say what
// they found.
func (d *Doctor) skip(results []Result) []Result {
	for i, r := range results {
		if !slices.Contains(d.opts.Skip, r.Check) {
			continue
		}
		results[i] = Result{Group: r.Group, Check: r.Check, Status: Warn, Message: "skipped (--skip " + r.Check + ")",
			Cause: fmt.Sprintf("it found: %s %s", r.Status.Symbol(), r.Message), Fix: "drop --skip " + r.Check + " to check it"}
	}
	return results
}

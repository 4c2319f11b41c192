// Package admission is glaceon's pod mutating webhook: for a pod annotated
// glaceon.fly/target it claims a pooled peer of the pod's FlyOrg (no Fly
// call), or records a FlyPeer and creates the pod's own Fly WireGuard peer
// in the pod's FlyOrg, and stores the peer's wg-quick file in a
// Secret and injects the tunnel sidecar (the pure webhook/inject function).
// Anything it cannot do is a denial that names the cause and the fix; what
// it started is undone within the webhook's timeout, or left to the
// sweeper, which finds it through the FlyPeer.
package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/flyorg"
	"github.com/glaceon/glaceon/webhook/inject"
	"github.com/glaceon/glaceon/webhook/peers"
	"github.com/glaceon/glaceon/webhook/pool"
)

// Path is where the handler is served.
const Path = "/mutate-v1-pod"

// Event reasons recorded on a denied pod's owner.
const (
	ReasonDenied = "GlaceonInjectionDenied"
)

// Steps of one admission, passed to Options.TestHook.
const (
	StepBeforeFlyPeer  = "before-flypeer"
	StepAfterFlyPeer   = "after-flypeer"
	StepBeforeClaim    = "before-claim"
	StepAfterClaim     = "after-claim"
	StepAfterFly       = "after-fly"
	StepAfterSecret    = "after-secret"
	StepBeforeResponse = "before-response"
)

// Options configures the Handler.
type Options struct {
	Inject inject.Config
	// Orgs gives each FlyOrg's Fly client.
	Orgs *flyorg.Registry
	// Reader reads FlyOrgs (the manager's cache).
	Reader client.Reader
	// APIReader reads FlyPeers uncached, to tell a reinvocation from a
	// copied pod.
	APIReader client.Reader
	// Client writes FlyPeers and creates and deletes peer Secrets.
	Client client.Client
	// Pool claims pooled peers (nil: no pool, every peer is made at Fly).
	Pool *pool.Claimer
	// Namer makes this cluster's peer names.
	Namer *peers.Namer
	// Timeout bounds the whole admission, clean-up included: keep it under
	// the webhook's timeoutSeconds so that the pod is denied with the
	// cause instead of the API server timing out.
	Timeout time.Duration
	// FlyTimeout bounds the Fly call of one admission; at least
	// MinCleanupTime under Timeout, for the Secret and a clean-up.
	FlyTimeout  time.Duration
	GatewayPort int
	Recorder    events.EventRecorder
	Log         logr.Logger

	// TestHook, when set, is called at each step (Step*) with the pod's
	// name (or generateName); an error ends the admission at once with no
	// clean-up, as if the process died there. Tests and benchmarks only.
	TestHook func(step, pod string) error
}

// MinCleanupTime is the part of Options.Timeout kept free of Fly calls:
// creating the Secret, and undoing what was made if something fails.
const MinCleanupTime = 2 * time.Second

// Handler is the pod mutating webhook.
type Handler struct {
	opts    Options
	decoder admission.Decoder
}

// NewHandler checks opts and returns the handler.
func NewHandler(scheme *runtime.Scheme, opts Options) (*Handler, error) {
	var errs []error
	if opts.Orgs == nil {
		errs = append(errs, errors.New("no FlyOrg registry"))
	}
	if opts.Reader == nil || opts.APIReader == nil || opts.Client == nil {
		errs = append(errs, errors.New("no Kubernetes reader, API reader or client"))
	}
	if opts.Namer == nil {
		errs = append(errs, errors.New("no peer namer"))
	}
	if err := opts.Inject.Validate(); err != nil {
		errs = append(errs, err)
	}
	if opts.FlyTimeout <= 0 || opts.FlyTimeout > opts.Timeout-MinCleanupTime {
		errs = append(errs, fmt.Errorf("fly timeout %s must be positive and at least %s under the admission timeout %s", opts.FlyTimeout, MinCleanupTime, opts.Timeout))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("admission handler: %w", err)
	}
	return &Handler{opts: opts, decoder: admission.NewDecoder(scheme)}, nil
}

// Handle admits one pod.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, h.opts.Timeout)
	defer cancel()
	resp, outcome, reason := h.handle(ctx, req)
	admissionsTotal.WithLabelValues(outcome, reason).Inc()
	admissionDuration.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	return resp
}

func (h *Handler) handle(ctx context.Context, req admission.Request) (admission.Response, string, string) {
	log := h.opts.Log.WithValues("namespace", req.Namespace, "uid", req.UID)
	if req.Operation != "CREATE" {
		return admission.Allowed("glaceon only acts on pod creation"), outcomeSkipped, "not_create"
	}
	pod := &corev1.Pod{}
	if err := h.decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode pod: %w", err)), outcomeErrored, "decode"
	}
	// The API server sets the namespace after mutation in some paths; the
	// request always has it.
	namespace := req.Namespace
	if !inject.WantsInjection(pod) {
		return admission.Allowed("no " + inject.AnnotationTarget + " annotation"), outcomeSkipped, "not_annotated"
	}
	copied := false
	if inject.IsInjected(pod) {
		if h.isReinvocation(ctx, pod, namespace) {
			return admission.Allowed("already injected"), outcomeSkipped, "already_injected"
		}
		// Copied from an injected pod: one key, one live endpoint.
		copied = true
	}
	log = log.WithValues("pod", podDisplayName(pod))

	request, errs := inject.ParsePodAnnotations(pod)
	var orgs glaceonv1alpha1.FlyOrgList
	if err := h.opts.Reader.List(ctx, &orgs); err != nil {
		return h.deny(log, pod, namespace, "internal", fmt.Sprintf("list FlyOrgs: %v; retrying is safe", err))
	}
	org, err := flyorg.Resolve(orgs.Items, request.Org, namespace)
	if err != nil {
		if len(errs) > 0 {
			return h.deny(log, pod, namespace, "invalid", errs.ToAggregate().Error()+"; "+err.Error())
		}
		return h.deny(log, pod, namespace, "policy", err.Error())
	}
	cfg := h.opts.Inject
	cfg.DefaultOrg = org.Name
	if org.Spec.DefaultRegion != "" {
		cfg.DefaultRegion = org.Spec.DefaultRegion
	}
	request = request.WithDefaults(cfg)
	errs = append(errs, inject.Validate(pod, cfg)...)
	if len(errs) > 0 {
		return h.deny(log, pod, namespace, "invalid", errs.ToAggregate().Error())
	}

	if req.DryRun != nil && *req.DryRun {
		// sideEffects: NoneOnDryRun: the same shape, no peer, no Secret.
		resp := h.patch(req, pod, cfg, inject.PlaceholderPeer(), copied)
		return resp, outcomeDryRun, "dry_run"
	}

	peer, fp, err := h.claim(ctx, log, org, pod, namespace, request)
	pooled := fp != nil
	if err == nil && !pooled {
		fly, ferr := h.opts.Orgs.Client(ctx, org)
		if ferr != nil {
			return h.deny(log, pod, namespace, "fly_token", fmt.Sprintf("FlyOrg %q cannot be used: %v", org.Name, ferr))
		}
		peer, fp, err = h.provision(ctx, log, fly, org, pod, namespace, request)
	}
	if err != nil {
		if errors.Is(err, errCrashed) {
			return admission.Errored(http.StatusInternalServerError, err), outcomeErrored, "crashed"
		}
		return h.deny(log, pod, namespace, failureReason(err), err.Error())
	}
	resp := h.patch(req, pod, cfg, peer, copied)
	if !resp.Allowed {
		h.rollback(ctx, log, fp, true)
		return resp, outcomeErrored, "patch"
	}
	if err := h.step(StepBeforeResponse, pod); err != nil {
		return admission.Errored(http.StatusInternalServerError, err), outcomeErrored, "crashed"
	}
	log.Info("injected glaceon sidecar", "peer", peer.Name, "flyorg", org.Name, "pooled", pooled, "copy", copied, "targets", inject.FormatTargets(request.Targets))
	return resp, outcomeInjected, "ok"
}

// isReinvocation tells the API server calling again for a pod this
// admission already injected (reinvocationPolicy IfNeeded) from a pod
// copied from an injected one: the peer it names was made for this
// namespace and is not bound to a pod yet. Read uncached: the FlyPeer was
// written moments ago. Rare (only injected pods reach here).
func (h *Handler) isReinvocation(ctx context.Context, pod *corev1.Pod, namespace string) bool {
	var fp glaceonv1alpha1.FlyPeer
	if err := h.opts.APIReader.Get(ctx, client.ObjectKey{Name: pod.Annotations[inject.AnnotationPeer]}, &fp); err != nil {
		return false
	}
	return fp.DeletionTimestamp.IsZero() && fp.Spec.Pod.Namespace == namespace && fp.Spec.Pod.UID == ""
}

// patch injects pod for peer (or points a copied pod at it) and returns
// the JSON patch response.
func (h *Handler) patch(req admission.Request, pod *corev1.Pod, cfg inject.Config, peer inject.Peer, copied bool) admission.Response {
	var injected *corev1.Pod
	var err error
	if copied {
		injected, err = inject.Repoint(pod, peer)
	} else {
		injected, err = inject.Inject(pod, cfg, peer)
	}
	if err != nil {
		var invalid *inject.InvalidPodError
		if errors.As(err, &invalid) {
			return admission.Denied("glaceon: " + invalid.Errors.ToAggregate().Error())
		}
		return admission.Errored(http.StatusInternalServerError, err)
	}
	raw, err := json.Marshal(injected)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encode injected pod: %w", err))
	}
	return admission.PatchResponseFromRaw(req.Object.Raw, raw)
}

// deny answers with message and records it on the pod's owner, where users
// of Deployments and Jobs look (the pod itself never exists).
func (h *Handler) deny(log logr.Logger, pod *corev1.Pod, namespace, reason, message string) (admission.Response, string, string) {
	log.Info("denied pod", "reason", reason, "message", message)
	if owner := controllerOf(pod, namespace); owner != nil && h.opts.Recorder != nil {
		h.opts.Recorder.Eventf(owner, nil, corev1.EventTypeWarning, ReasonDenied, "Admit", "glaceon denied a pod: %s", message)
	}
	return admission.Denied("glaceon: " + message), outcomeDenied, reason
}

func controllerOf(pod *corev1.Pod, namespace string) *corev1.ObjectReference {
	for _, ref := range pod.OwnerReferences {
		if ref.Controller != nil && *ref.Controller {
			return &corev1.ObjectReference{APIVersion: ref.APIVersion, Kind: ref.Kind, Name: ref.Name, UID: ref.UID, Namespace: namespace}
		}
	}
	return nil
}

func podDisplayName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "<generated>"
}

// Package admission is glaceon's pod mutating webhook: for a pod annotated
// glaceon.fly/target it creates the pod's own Fly WireGuard peer, stores the
// peer's wg-quick file in a Secret and injects the tunnel sidecar (the pure
// webhook/inject function). Anything it cannot do is a denial that names
// the cause and the fix, and nothing half-made is left behind.
package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/webhook/inject"
)

// Path is where the handler is served.
const Path = "/mutate-v1-pod"

// Event reasons recorded on a denied pod's owner.
const (
	ReasonDenied = "GlaceonInjectionDenied"
)

// FlyAPI is the part of the Fly API the webhook uses; *flyapi.Client
// implements it (and owns the org lookup cache and the Fly metrics).
type FlyAPI interface {
	CachedOrganization(ctx context.Context, slug string) (*flyapi.Organization, error)
	AddPeer(ctx context.Context, in flyapi.AddPeerInput) (*flyapi.CreatedPeer, error)
	RemovePeer(ctx context.Context, org flyapi.Organization, name string) error
}

// Options configures the Handler.
type Options struct {
	Inject inject.Config
	Fly    FlyAPI
	// Client creates and deletes peer Secrets. Use a client that reads
	// from the API server, not a cache.
	Client client.Client
	Policy *PolicySource
	// FlyTimeout bounds the Fly calls of one admission. Keep it a few
	// seconds under the webhook's timeoutSeconds so the pod is denied with
	// the cause instead of the API server timing out.
	FlyTimeout time.Duration
	// PeerPrefix starts every peer name, e.g. "k8s-" or "k8s-prod-"; the
	// sweeper only touches peers with this prefix.
	PeerPrefix  string
	GatewayPort int
	// TokenSource says where the Fly token comes from (e.g. "secret
	// glaceon-system/fly-api-token"), for denial messages.
	TokenSource string
	Recorder    events.EventRecorder
	Log         logr.Logger
}

// Handler is the pod mutating webhook.
type Handler struct {
	opts    Options
	decoder admission.Decoder
}

// NewHandler checks opts and returns the handler.
func NewHandler(scheme *runtime.Scheme, opts Options) (*Handler, error) {
	var errs []error
	if opts.Fly == nil {
		errs = append(errs, errors.New("no Fly API client"))
	}
	if opts.Client == nil {
		errs = append(errs, errors.New("no Kubernetes client"))
	}
	if err := opts.Inject.Validate(); err != nil {
		errs = append(errs, err)
	}
	if opts.FlyTimeout <= 0 {
		errs = append(errs, errors.New("fly timeout must be positive"))
	}
	if err := flyapi.ValidatePeerName(strings.TrimSuffix(opts.PeerPrefix, "-") + "-x"); err != nil {
		errs = append(errs, fmt.Errorf("peer prefix %q: %w", opts.PeerPrefix, err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("admission handler: %w", err)
	}
	if opts.Policy == nil {
		opts.Policy = &PolicySource{DefaultOrg: opts.Inject.DefaultOrg}
	}
	if opts.TokenSource == "" {
		opts.TokenSource = "FLY_API_TOKEN"
	}
	return &Handler{opts: opts, decoder: admission.NewDecoder(scheme)}, nil
}

// Handle admits one pod.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
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
	if inject.IsInjected(pod) {
		// Reinvocation, or a pod copied from an injected one: one peer per pod.
		return admission.Allowed("already injected"), outcomeSkipped, "already_injected"
	}
	log = log.WithValues("pod", podDisplayName(pod))

	request, errs := inject.ParsePodAnnotations(pod)
	request = request.WithDefaults(h.opts.Inject)
	errs = append(errs, inject.Validate(pod, h.opts.Inject)...)
	if len(errs) > 0 {
		return h.deny(log, pod, namespace, "invalid", errs.ToAggregate().Error())
	}
	if err := h.opts.Policy.Check(ctx, request.Org, namespace); err != nil {
		return h.deny(log, pod, namespace, "policy", err.Error())
	}

	if req.DryRun != nil && *req.DryRun {
		// sideEffects: NoneOnDryRun: the same shape, no peer, no Secret.
		resp := h.patch(req, pod, inject.PlaceholderPeer())
		return resp, outcomeDryRun, "dry_run"
	}

	peer, err := h.provision(ctx, log, pod, namespace, request)
	if err != nil {
		reason := failureReason(err)
		return h.deny(log, pod, namespace, reason, err.Error())
	}
	resp := h.patch(req, pod, peer)
	if !resp.Allowed {
		h.rollback(log, namespace, request.Org, peer)
		return resp, outcomeErrored, "patch"
	}
	log.Info("injected glaceon sidecar", "peer", peer.Name, "org", request.Org, "targets", inject.FormatTargets(request.Targets))
	return resp, outcomeInjected, "ok"
}

// patch injects pod for peer and returns the JSON patch response.
func (h *Handler) patch(req admission.Request, pod *corev1.Pod, peer inject.Peer) admission.Response {
	injected, err := inject.Inject(pod, h.opts.Inject, peer)
	if err != nil {
		var invalid *inject.InvalidPodError
		if errors.As(err, &invalid) {
			return admission.Denied(invalid.Errors.ToAggregate().Error())
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

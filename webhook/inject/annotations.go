package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/glaceon/glaceon/flyapi/target"
)

// annotationsPath is the field path all annotation errors hang off, so that
// messages read "metadata.annotations[glaceon.fly/target]: …".
var annotationsPath = field.NewPath("metadata", "annotations")

// Request is what a pod asks for through its annotations.
type Request struct {
	// Targets are the parsed glaceon.fly/target entries, in annotation order.
	Targets []Target
	// Org is glaceon.fly/org, or "" when the pod leaves it to the default.
	Org string
	// Region is glaceon.fly/region, or "" when the pod leaves it to the default.
	Region string
	// Mode is glaceon.fly/inject-mode, or "" when the pod leaves it to the default.
	Mode SidecarMode
	// Transport is glaceon.fly/transport, or "" for the sidecar's default.
	Transport string
}

// WithDefaults fills the fields the pod left empty from cfg.
func (r Request) WithDefaults(cfg Config) Request {
	if r.Org == "" {
		r.Org = cfg.DefaultOrg
	}
	if r.Region == "" {
		r.Region = cfg.DefaultRegion
	}
	if r.Mode == "" {
		r.Mode = cfg.Mode
	}
	return r
}

// WantsInjection reports whether the pod opted in with glaceon.fly/target.
func WantsInjection(pod *corev1.Pod) bool {
	_, ok := pod.GetAnnotations()[AnnotationTarget]
	return ok
}

// IsInjected reports whether the pod already went through Inject, i.e. it
// carries glaceon.fly/injected. Inject returns such pods unchanged.
func IsInjected(pod *corev1.Pod) bool {
	_, ok := pod.GetAnnotations()[AnnotationInjected]
	return ok
}

// ParsePodAnnotations reads glaceon's annotations from the pod. It reports
// every problem at once, each naming the annotation and the fix; defaults
// (Request.WithDefaults) are not applied.
func ParsePodAnnotations(pod *corev1.Pod) (Request, field.ErrorList) {
	req, errs := parsePodAnnotations(pod)
	if len(errs) > 0 {
		req.Targets = nil
	}
	return req, errs
}

// parsePodAnnotations is ParsePodAnnotations keeping the targets that
// parsed even when others did not.
func parsePodAnnotations(pod *corev1.Pod) (Request, field.ErrorList) {
	var (
		req  Request
		errs field.ErrorList
	)
	annotations := pod.GetAnnotations()

	targetPath := annotationsPath.Key(AnnotationTarget)
	if value, ok := annotations[AnnotationTarget]; !ok {
		errs = append(errs, field.Required(targetPath, "add it to opt in to glaceon, "+target.Examples))
	} else {
		targets, targetErrs := parseTargetList(value, targetPath)
		req.Targets = targets
		errs = append(errs, targetErrs...)
	}

	if org, ok := annotations[AnnotationOrg]; ok {
		orgErrs := ValidateOrgSlug(org, annotationsPath.Key(AnnotationOrg))
		if len(orgErrs) == 0 {
			req.Org = org
		}
		errs = append(errs, orgErrs...)
	}

	if region, ok := annotations[AnnotationRegion]; ok {
		regionErrs := ValidateRegion(region, annotationsPath.Key(AnnotationRegion))
		if len(regionErrs) == 0 {
			req.Region = region
		}
		errs = append(errs, regionErrs...)
	}

	if mode, ok := annotations[AnnotationInjectMode]; ok {
		switch SidecarMode(mode) {
		case SidecarModeNative, SidecarModeClassic, SidecarModePeerOnly:
			req.Mode = SidecarMode(mode)
		default:
			errs = append(errs, field.Invalid(annotationsPath.Key(AnnotationInjectMode), target.Shorten(mode),
				fmt.Sprintf("use %q (init container with restartPolicy Always, Kubernetes 1.29+), %q (regular container, older clusters) or %q (the pod runs glaceon-sidecar itself), or remove the annotation for the default",
					SidecarModeNative, SidecarModeClassic, SidecarModePeerOnly)))
		}
	}

	if tr, ok := annotations[AnnotationTransport]; ok {
		trErrs := ValidateTransport(tr, annotationsPath.Key(AnnotationTransport))
		if len(trErrs) == 0 {
			req.Transport = tr
		}
		errs = append(errs, trErrs...)
	}
	return req, errs
}

// Transports are the values of the sidecar's --transport.
var Transports = []string{"auto", "udp", "websocket"}

// ValidateTransport checks a glaceon.fly/transport value.
func ValidateTransport(v string, path *field.Path) field.ErrorList {
	for _, t := range Transports {
		if v == t {
			return nil
		}
	}
	return field.ErrorList{field.Invalid(path, target.Shorten(v),
		`use "auto" (UDP, falling back to WebSocket over TCP 443), "udp" or "websocket", or remove the annotation for auto`)}
}

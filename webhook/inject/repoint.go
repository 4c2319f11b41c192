package inject

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Repoint returns a copy of an already injected pod that uses peer instead
// of the peer it carries: the Secret volume and the glaceon.fly/peer
// annotation change, nothing else (the targets, and so the rest of the
// injection, are the same). It is for pods copied from an injected pod
// (`kubectl debug --copy-to`, restores): a WireGuard key must not serve two
// live endpoints, so the copy gets a peer of its own.
func Repoint(pod *corev1.Pod, peer Peer) (*corev1.Pod, error) {
	if pod == nil {
		return nil, errors.New("inject: nil pod")
	}
	if !IsInjected(pod) {
		return nil, errors.New("inject: repoint a pod that is not injected")
	}
	if err := peer.Validate(); err != nil {
		return nil, fmt.Errorf("invalid peer: %w", err)
	}
	out := pod.DeepCopy()
	v := peerVolume(out)
	if v == nil {
		return nil, &InvalidPodError{Errors: fieldErrorsNoPeerVolume()}
	}
	v.Secret.SecretName = peer.SecretName
	out.Annotations[AnnotationPeer] = peer.Name
	return out, nil
}

func fieldErrorsNoPeerVolume() field.ErrorList {
	return field.ErrorList{field.Required(field.NewPath("spec", "volumes"),
		fmt.Sprintf("the pod carries %s but has no Secret volume named %s: remove the annotation to have the pod injected afresh", AnnotationInjected, PeerVolumeName))}
}

package admission

import (
	"crypto/rand"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

const (
	// maxPeerName keeps <peer>._peer.internal a valid DNS label and the
	// name usable as a Secret name and label value.
	maxPeerName = 63
	// randomSuffixLen random characters make names unique even for
	// pods that arrive without a name (generateName).
	randomSuffixLen = 6
)

// PeerName returns a fresh Fly peer name for pod: "<prefix><ns>-<hint>-<rand>",
// lower-case [a-z0-9-], at most 63 characters. The hint is the pod's name,
// else its generateName (pods from controllers have no name at admission),
// else its owner's name. prefix is e.g. "k8s-" or "k8s-<cluster>-".
func PeerName(prefix string, pod *corev1.Pod, namespace string) string {
	hint := pod.Name
	if hint == "" {
		hint = strings.TrimRight(pod.GenerateName, "-")
	}
	if hint == "" && len(pod.OwnerReferences) > 0 {
		hint = pod.OwnerReferences[0].Name
	}
	if hint == "" {
		hint = "pod"
	}
	suffix := "-" + randomString(randomSuffixLen)
	body := sanitize(namespace) + "-" + sanitize(hint)
	budget := maxPeerName - len(prefix) - len(suffix)
	if len(body) > budget {
		body = strings.TrimRight(body[:budget], "-")
	}
	return prefix + body + suffix
}

// sanitize maps s to lower-case [a-z0-9-] with no leading, trailing or
// doubled dashes.
func sanitize(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
		switch {
		case ok:
			b.WriteRune(r)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
	}
	out := strings.TrimRight(b.String(), "-")
	if out == "" {
		return "x"
	}
	return out
}

// randomString returns n random characters of [a-z2-7].
func randomString(n int) string {
	return strings.ToLower(rand.Text()[:n])
}

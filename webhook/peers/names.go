package peers

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// DefaultPrefix is the manager's default --peer-prefix.
	DefaultPrefix = "k8s-"
	// MaxPeerName keeps <peer>._peer.internal a valid DNS label and the
	// name usable as a FlyPeer, Secret and label value.
	MaxPeerName = 63
	// randomLen random characters of [a-z2-7] end every name: unique even
	// for pods that arrive without a name (generateName).
	randomLen = 6
	// minBody is the room the prefix and cluster identity must leave for
	// "<namespace>-<pod>": below it names say nothing about their pod.
	minBody = 8
	// clusterHashLen is the length of the identity derived from the
	// kube-system namespace's UID.
	clusterHashLen = 6
	// MaxClusterName bounds --cluster-name.
	MaxClusterName = 16
)

var (
	prefixRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	clusterNameRE = regexp.MustCompile(`^[a-z0-9]+$`)
	lowerBase32   = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
)

// Namer makes this cluster's Fly peer names and recognises them. A name is
//
//	<prefix><namespace>-<pod hint>-<cluster>-<random>
//
// where cluster is --cluster-name or a short hash of the kube-system
// namespace's UID, and random is 6 characters of [a-z2-7]. Two clusters
// with the same prefix in one org have different cluster identities, so
// neither ever takes the other's peers (or a person's, such as
// k8s-laptop-1) for its own.
type Namer struct {
	prefix, cluster string
	ours            *regexp.Regexp
}

// NewNamer checks prefix and cluster identity and returns the Namer. The
// error names the flag to fix.
func NewNamer(prefix, cluster string) (*Namer, error) {
	if !prefixRE.MatchString(prefix) {
		return nil, fmt.Errorf("peer prefix %q: use lower-case letters, digits and '-', starting with a letter or digit (e.g. k8s-)", prefix)
	}
	if !clusterNameRE.MatchString(cluster) || len(cluster) > MaxClusterName {
		return nil, fmt.Errorf("cluster name %q: use 1 to %d lower-case letters and digits (no '-', so peer names stay unambiguous)", cluster, MaxClusterName)
	}
	if room := MaxPeerName - len(prefix) - len(cluster) - randomLen - 2; room < minBody {
		return nil, fmt.Errorf("peer prefix %q with cluster name %q leaves %d characters for the namespace and pod in a %d-character peer name; shorten --peer-prefix to at most %d characters",
			prefix, cluster, max(room, 0), MaxPeerName, len(prefix)-(minBody-room))
	}
	ours := regexp.MustCompile("^" + regexp.QuoteMeta(prefix) + `[a-z0-9-]*[a-z0-9]-` + cluster + `-[a-z2-7]{6}$`)
	return &Namer{prefix: prefix, cluster: cluster, ours: ours}, nil
}

// Cluster is the cluster identity in the names.
func (n *Namer) Cluster() string { return n.cluster }

// Pattern is the regular expression of this cluster's names (for docs,
// logs and errors).
func (n *Namer) Pattern() string { return n.ours.String() }

// Ours reports whether name is one this Namer could have made.
func (n *Namer) Ours(name string) bool { return n.ours.MatchString(name) }

// New returns a fresh peer name for pod in namespace. The hint is the pod's
// name, else its generateName (pods from controllers have no name at
// admission), else its owner's name.
func (n *Namer) New(pod *corev1.Pod, namespace string) string {
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
	suffix := "-" + n.cluster + "-" + strings.ToLower(rand.Text()[:randomLen])
	body := sanitize(namespace) + "-" + sanitize(hint)
	if budget := MaxPeerName - len(n.prefix) - len(suffix); len(body) > budget {
		body = strings.TrimRight(body[:budget], "-")
	}
	return n.prefix + body + suffix
}

// NewPooled returns a fresh peer name for a pooled peer of FlyOrg org in
// region: "pool-<org>-<region>" takes the place of "<namespace>-<pod>"
// (the pod is not known yet), so the sweeper's pattern covers it.
func (n *Namer) NewPooled(org, region string) string {
	if region == "" {
		region = "any"
	}
	return n.New(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: sanitize(org) + "-" + region}}, "pool")
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

// ClusterHash is the cluster identity derived from the kube-system
// namespace's UID: stable for the cluster's life, different per cluster.
func ClusterHash(uid types.UID) string {
	sum := sha256.Sum256([]byte(uid))
	return lowerBase32.EncodeToString(sum[:])[:clusterHashLen]
}

// DiscoverClusterHash reads the kube-system namespace (uncached) and
// returns its ClusterHash.
func DiscoverClusterHash(ctx context.Context, r client.Reader) (string, error) {
	var ns corev1.Namespace
	if err := r.Get(ctx, client.ObjectKey{Name: "kube-system"}, &ns); err != nil {
		return "", fmt.Errorf("read namespace kube-system for this cluster's identity (or set --cluster-name): %w", err)
	}
	return ClusterHash(ns.UID), nil
}

package peers

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/webhook/inject"
)

// Unit tests of the pure parts; lifecycle_test.go runs the controller
// against a real control plane.

func TestBackoffDelay(t *testing.T) {
	tests := map[string]struct {
		failures int
		want     time.Duration
	}{
		"first":       {0, time.Second},
		"second":      {1, 2 * time.Second},
		"fourth":      {3, 8 * time.Second},
		"capped":      {7, time.Minute},
		"huge capped": {1000, time.Minute},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := backoffDelay(tc.failures, time.Second, time.Minute); got != tc.want {
				t.Errorf("backoffDelay(%d) = %s, want %s", tc.failures, got, tc.want)
			}
		})
	}
}

// TestOrphanTracker: a Fly peer is due only once seen orphaned on two sweeps
// at least grace apart; a peer that gets a Secret, or disappears, starts
// over; orgs are independent.
func TestOrphanTracker(t *testing.T) {
	const grace = time.Minute
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var tr orphanTracker

	if due := tr.observe("acme", []string{"k8s-a", "k8s-b"}, t0, grace); len(due) != 0 {
		t.Fatalf("first sight: due %v, want none", due)
	}
	if due := tr.observe("acme", []string{"k8s-a", "k8s-b"}, t0.Add(grace-time.Nanosecond), grace); len(due) != 0 {
		t.Fatalf("before grace: due %v, want none", due)
	}
	// k8s-b got its Secret: it is forgotten.
	if due := tr.observe("acme", []string{"k8s-a"}, t0.Add(grace), grace); !slices.Equal(due, []string{"k8s-a"}) {
		t.Fatalf("after grace: due %v, want [k8s-a]", due)
	}
	// k8s-b orphaned again: its clock starts again.
	if due := tr.observe("acme", []string{"k8s-a", "k8s-b"}, t0.Add(grace+time.Second), grace); !slices.Equal(due, []string{"k8s-a"}) {
		t.Fatalf("k8s-b re-orphaned: due %v, want [k8s-a]", due)
	}
	// Another org does not disturb acme's entries.
	if due := tr.observe("other", []string{"k8s-a"}, t0.Add(10*grace), grace); len(due) != 0 {
		t.Fatalf("other org first sight: due %v", due)
	}
	tr.forget("acme", "k8s-a")
	if due := tr.observe("acme", []string{"k8s-b"}, t0.Add(2*grace+time.Second), grace); !slices.Equal(due, []string{"k8s-b"}) {
		t.Fatalf("k8s-b after its own grace: due %v, want [k8s-b]", due)
	}
	if n := tr.len(); n != 2 {
		t.Errorf("tracked %d entries, want 2 (acme/k8s-b, other/k8s-a)", n)
	}
	if due := tr.observe("acme", nil, t0.Add(3*grace), grace); len(due) != 0 || tr.len() != 1 {
		t.Errorf("acme emptied: due %v, tracked %d, want none and 1", due, tr.len())
	}
}

func testPod(peer, secret string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-x", Namespace: "ns", UID: "pod-uid",
			Annotations: map[string]string{inject.AnnotationPeer: peer},
		},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{
			{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: inject.PeerVolumeName, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}}},
		}},
	}
}

func TestClaims(t *testing.T) {
	tests := map[string]struct {
		pod  *corev1.Pod
		want bool
	}{
		"annotation and volume": {testPod("k8s-p", "k8s-p"), true},
		"other peer":            {testPod("k8s-q", "k8s-p"), false},
		"does not mount":        {testPod("k8s-p", "k8s-q"), false},
		"no uid yet": {func() *corev1.Pod {
			p := testPod("k8s-p", "k8s-p")
			p.UID = ""
			return p
		}(), false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := claims(tc.pod, "k8s-p", "k8s-p"); got != tc.want {
				t.Errorf("claims = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSecretsForPod(t *testing.T) {
	got := secretsForPod(context.Background(), testPod("k8s-p", "k8s-p"))
	want := types.NamespacedName{Namespace: "ns", Name: "k8s-p"}
	if len(got) != 1 || got[0].NamespacedName != want {
		t.Errorf("secretsForPod = %v, want [%v]", got, want)
	}
	p := testPod("", "k8s-p")
	if got := secretsForPod(context.Background(), p); len(got) != 0 {
		t.Errorf("pod without peer annotation: %v, want none", got)
	}
}

func TestStillClaimed(t *testing.T) {
	sec := newSecretMeta()
	sec.Name, sec.Namespace = "k8s-p", "ns"
	sec.Labels = map[string]string{inject.LabelPeerName: "k8s-p"}
	other := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other", UID: "other-uid"}}
	if stillClaimed(sec, []corev1.Pod{other}) {
		t.Error("an unrelated pod claims the secret")
	}
	// Conservative: annotation alone, mount alone, or owner UID alone keep it.
	annotated := other
	annotated.Annotations = map[string]string{inject.AnnotationPeer: "k8s-p"}
	mounting := *testPod("", "k8s-p")
	owner := other
	sec.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: "other", UID: "other-uid"}}
	for name, pod := range map[string]corev1.Pod{"annotated": annotated, "mounting": mounting, "owner": owner} {
		if !stillClaimed(sec, []corev1.Pod{pod}) {
			t.Errorf("%s pod does not keep the secret", name)
		}
	}
}

func TestPeerSecretSelector(t *testing.T) {
	sel := peerSecretSelector()
	for _, tc := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{inject.LabelManagedBy: inject.ManagedByValue, inject.LabelPeerName: "k8s-p"}, true},
		{map[string]string{inject.LabelManagedBy: inject.ManagedByValue}, false}, // e.g. the serving cert
		{map[string]string{inject.LabelPeerName: "k8s-p"}, false},
	} {
		if got := sel.Matches(labels.Set(tc.labels)); got != tc.want {
			t.Errorf("selector %s on %v = %v, want %v", sel, tc.labels, got, tc.want)
		}
	}
}

type nopFly struct{}

func (nopFly) CachedOrganization(context.Context, string) (*flyapi.Organization, error) {
	return nil, errors.New("unused")
}
func (nopFly) ListPeers(context.Context, string) ([]flyapi.Peer, error) { return nil, nil }
func (nopFly) RemovePeer(context.Context, flyapi.Organization, string) error {
	return nil
}

func TestOptionsValidate(t *testing.T) {
	tests := map[string]struct {
		opts    Options
		wantErr []string
	}{
		"ok":                {Options{Fly: nopFly{}, Prefix: "k8s-prod-", Orgs: []string{"acme"}}, nil},
		"no orgs no prefix": {Options{Fly: nopFly{}}, nil},
		"no fly":            {Options{}, []string{"Options.Fly"}},
		"orgs without prefix": {Options{Fly: nopFly{}, Orgs: []string{"acme"}},
			[]string{"Options.Prefix is empty"}},
		"bad prefix and empty org": {Options{Fly: nopFly{}, Prefix: "K8S_", Orgs: []string{""}},
			[]string{"Options.Prefix \"K8S_\"", "empty slug"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.opts.setDefaults()
			err := tc.opts.validate()
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate: nil, want errors %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

package peers

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/glaceon/glaceon/flyapi"
)

func TestNamerNew(t *testing.T) {
	long := strings.Repeat("a", 80)
	tests := []struct {
		name, prefix, cluster, ns string
		pod                       corev1.Pod
		wantPrefix                string
	}{
		{"named pod", "k8s-", "abc234", "default", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1"}}, "k8s-default-web-1-abc234-"},
		{"generateName", "k8s-", "abc234", "shop", corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "web-6d4b9-"}}, "k8s-shop-web-6d4b9-abc234-"},
		{"owner only", "k8s-", "prod", "shop", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{{Name: "job-x"}}}}, "k8s-shop-job-x-prod-"},
		{"nothing", "k8s-prod-", "abc234", "ns", corev1.Pod{}, "k8s-prod-ns-pod-abc234-"},
		{"odd characters", "k8s-", "abc234", "Team_A", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "We.b--X"}}, "k8s-team-a-we-b-x-abc234-"},
		{"too long", "k8s-", "abc234", long, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: long}}, "k8s-aaaa"},
		{"longest prefix", strings.Repeat("p", 30) + "-", "abcdefghijklmnop", long, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: long}}, strings.Repeat("p", 30) + "-aaaa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := NewNamer(tt.prefix, tt.cluster)
			if err != nil {
				t.Fatal(err)
			}
			got := n.New(&tt.pod, tt.ns)
			if !strings.HasPrefix(got, tt.wantPrefix) || len(got) > MaxPeerName {
				t.Errorf("New = %q (%d chars), want prefix %q and at most %d", got, len(got), tt.wantPrefix, MaxPeerName)
			}
			if err := flyapi.ValidatePeerName(got); err != nil {
				t.Errorf("New = %q is not a valid peer name: %v", got, err)
			}
			if !n.Ours(got) {
				t.Errorf("Ours(%q) = false for a name it made (pattern %s)", got, n.Pattern())
			}
			if again := n.New(&tt.pod, tt.ns); again == got {
				t.Errorf("two names for the same pod are equal (%q): the random suffix is missing", got)
			}
		})
	}
}

// TestNamerNewPooled: pooled peers' names are this cluster's (the
// sweeper's pattern covers them) and say which FlyOrg and region they are
// for.
func TestNamerNewPooled(t *testing.T) {
	long := strings.Repeat("o", 80)
	tests := []struct{ name, prefix, org, region, wantPrefix string }{
		{"region", "k8s-", "personal", "yyz", "k8s-pool-personal-yyz-abc234-"},
		{"Fly's choice", "k8s-", "personal", "", "k8s-pool-personal-any-abc234-"},
		{"long org", "k8s-", long, "iad", "k8s-pool-oooo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := NewNamer(tt.prefix, "abc234")
			if err != nil {
				t.Fatal(err)
			}
			got := n.NewPooled(tt.org, tt.region)
			if !strings.HasPrefix(got, tt.wantPrefix) || len(got) > MaxPeerName {
				t.Errorf("NewPooled = %q (%d chars), want prefix %q and at most %d", got, len(got), tt.wantPrefix, MaxPeerName)
			}
			if err := flyapi.ValidatePeerName(got); err != nil {
				t.Errorf("NewPooled = %q is not a valid peer name: %v", got, err)
			}
			if !n.Ours(got) {
				t.Errorf("Ours(%q) = false for a pooled name it made (pattern %s)", got, n.Pattern())
			}
		})
	}
}

// TestNamerOursOnlyMatchesThisCluster is defect 1 at the unit level: a
// second cluster with the same prefix, one whose prefix extends ours, a
// person's peer and the old unmarked names are never this cluster's.
func TestNamerOursOnlyMatchesThisCluster(t *testing.T) {
	ours, err := NewNamer("k8s-", "abc234")
	if err != nil {
		t.Fatal(err)
	}
	theirs, _ := NewNamer("k8s-", "xyz567")
	extended, _ := NewNamer("k8s-prod-", "qrs345")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	for _, name := range []string{
		theirs.New(pod, "default"),   // another cluster, same prefix
		extended.New(pod, "default"), // the README's k8s-prod- prefix
		"k8s-laptop-1",               // glaceon peer create --name k8s-laptop-1
		"k8s-default-web-abcdef",     // a pre-FlyPeer name (no cluster identity)
		"k8s-default-web-abc234",     // identity without the random suffix
		"k8s-abc234-abcdef",          // no namespace/pod part
		"laptop-default-web-abc234-abcdef",
		"k8s-default-web-abc234-ABCDEF",
		"k8s-default-web-abc234-abcdef-x",
	} {
		if ours.Ours(name) {
			t.Errorf("Ours(%q) = true; the sweeper would remove a peer this cluster did not make", name)
		}
	}
	if !ours.Ours("k8s-default-web-abc234-abcdef") {
		t.Errorf("Ours rejects a name of its own shape")
	}
}

// TestNewNamerRejectsWhatWouldPanic is issue 15 item 7: a prefix that
// leaves no room used to panic every admission; now it is refused at
// start with the flag to fix.
func TestNewNamerRejectsWhatWouldPanic(t *testing.T) {
	for _, tc := range []struct{ prefix, cluster, want string }{
		{strings.Repeat("k", 60) + "-", "abc234", "shorten --peer-prefix to at most 41 characters"},
		{strings.Repeat("k", 100), "abc234", "shorten --peer-prefix"},
		{"K8S-", "abc234", "lower-case"},
		{"", "abc234", "peer prefix"},
		{"-k8s", "abc234", "starting with a letter or digit"},
		{"k8s-", "prod-eu", "no '-'"},
		{"k8s-", "", "cluster name"},
		{"k8s-", strings.Repeat("c", 17), "1 to 16"},
	} {
		if _, err := NewNamer(tc.prefix, tc.cluster); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewNamer(%q, %q) = %v, want an error with %q", tc.prefix, tc.cluster, err, tc.want)
		}
	}
}

func TestClusterHash(t *testing.T) {
	a, b := ClusterHash("0b0d5c1e-1111-4c41-9c9e-000000000001"), ClusterHash("0b0d5c1e-1111-4c41-9c9e-000000000002")
	if a == b || len(a) != clusterHashLen || !clusterNameRE.MatchString(a) {
		t.Errorf("ClusterHash = %q, %q: want two different %d-character identities", a, b, clusterHashLen)
	}
	if _, err := NewNamer("k8s-", a); err != nil {
		t.Errorf("a cluster hash is not a valid identity: %v", err)
	}
}

func TestValidateGrace(t *testing.T) {
	if err := ValidateGrace(MinGrace - 1); err == nil || !strings.Contains(err.Error(), "--sweep-grace=1m0s") {
		t.Errorf("ValidateGrace below the floor = %v", err)
	}
	if err := ValidateGrace(MinGrace); err != nil {
		t.Errorf("ValidateGrace(MinGrace) = %v", err)
	}
}

func FuzzNamer(f *testing.F) {
	f.Add("k8s-", "abc234", "default", "web-1")
	f.Add(strings.Repeat("a", 40), "c", "NS", "")
	f.Fuzz(func(t *testing.T, prefix, cluster, ns, pod string) {
		n, err := NewNamer(prefix, cluster)
		if err != nil {
			return
		}
		got := n.New(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod}}, ns)
		if len(got) > MaxPeerName || !n.Ours(got) || flyapi.ValidatePeerName(got) != nil {
			t.Errorf("New(%q, %q) = %q: too long, not ours or invalid", pod, ns, got)
		}
	})
}

package peers

import (
	"context"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/glaceon/glaceon/flyapi"
	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/flyapi/wgquick"
	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
	"github.com/glaceon/glaceon/webhook/flyorg"
)

// TestSweepFlyListsEachOrgOnceAndOnlyTakesItsOwn: two FlyOrgs for one org
// and a third for another: each org is listed once per sweep (counted at
// the double against one listing by hand), only this cluster's names
// without a FlyPeer are removed, and nothing else is touched.
func TestSweepFlyListsEachOrgOnceAndOnlyTakesItsOwn(t *testing.T) {
	fly := flyapitest.Start(t, flyapitest.Options{})
	ctx := context.Background()
	ours, _ := NewNamer("k8s-", "abc234")
	theirs, _ := NewNamer("k8s-", "xyz567")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	add := func(org, name string) string {
		keys, err := wgquick.GenerateKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fly.AddPeer(org, name, keys.Public.String()); err != nil {
			t.Fatal(err)
		}
		return name
	}
	orphan, orphanAcme := add("personal", ours.New(pod, "shop")), add("acme", ours.New(pod, "shop"))
	live := add("personal", ours.New(pod, "shop"))
	keep := []string{add("personal", theirs.New(pod, "shop")), add("personal", "k8s-laptop-1"), add("personal", "k8s-shop-web-abcdef")}

	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = glaceonv1alpha1.AddToScheme(scheme)
	org := func(name, slug string) *glaceonv1alpha1.FlyOrg {
		return &glaceonv1alpha1.FlyOrg{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       glaceonv1alpha1.FlyOrgSpec{Slug: slug, TokenSecretRef: glaceonv1alpha1.SecretKeyRef{Name: "fly-api-token", Key: "token"}, Namespaces: []string{"*"}},
			Status:     glaceonv1alpha1.FlyOrgStatus{OrganizationID: fly.OrgID(slug)},
		}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "fly-api-token", Namespace: "glaceon-system"}, Data: map[string][]byte{"token": []byte(fly.Token())}},
		org("personal", "personal"), org("personal-again", "personal"), org("acme", "acme"),
		NewFlyPeer(live, "personal", "", wgquick.Key{}, "shop"),
	).Build()
	registry := flyorg.NewRegistry("glaceon-system", c, c, flyapi.Options{BaseURL: fly.URL()})
	r := &reconciler{reader: c, apiReader: c, client: c, fly: &flyOps{orgs: registry, reader: c, timeout: DefaultFlyCallTimeout}}
	s := &sweeper{r: r, namer: ours, log: logr.Discard()}

	// What one listing of each org costs at the double (it pages).
	byHand, err := flyapi.New(flyapi.Options{BaseURL: fly.URL(), Token: fly.Token()})
	if err != nil {
		t.Fatal(err)
	}
	fly.ResetRequestCounts()
	for _, slug := range []string{"personal", "acme"} {
		if _, err := byHand.ListPeers(ctx, slug); err != nil {
			t.Fatal(err)
		}
	}
	oneListing := map[string]int{"personal": fly.OrgRequests("personal"), "acme": fly.OrgRequests("acme")}

	fly.ResetRequestCounts()
	if err := s.sweepFly(ctx, map[string]bool{live: true}); err != nil {
		t.Fatal(err)
	}
	counts := fly.RequestCounts()
	for slug, want := range oneListing {
		if got := counts[flyapitest.RequestKey{Op: "organization.wireGuardPeers", Org: slug}]; got != want {
			t.Errorf("org %s: %d listing requests in one sweep, one listing is %d (listed more than once?)", slug, got, want)
		}
	}
	for _, name := range append([]string{live}, keep...) {
		if !peerAt(fly, "personal", name) {
			t.Errorf("sweep removed %s, which is not an orphan of this cluster", name)
		}
	}
	if peerAt(fly, "personal", orphan) || peerAt(fly, "acme", orphanAcme) {
		t.Errorf("this cluster's orphans are still there")
	}
}

func peerAt(fly *flyapitest.Server, org, name string) bool {
	for _, p := range fly.Peers(org) {
		if p.Name == name {
			return true
		}
	}
	return false
}

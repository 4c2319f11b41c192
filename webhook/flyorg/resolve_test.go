package flyorg

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
)

type orgOption func(*glaceonv1alpha1.FlyOrg)

func newOrg(name string, opts ...orgOption) glaceonv1alpha1.FlyOrg {
	o := glaceonv1alpha1.FlyOrg{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       glaceonv1alpha1.FlyOrgSpec{Namespaces: []string{"*"}},
		Status: glaceonv1alpha1.FlyOrgStatus{OrganizationID: "id-" + name, Conditions: []metav1.Condition{{
			Type: glaceonv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonReady}}},
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

func isDefault(o *glaceonv1alpha1.FlyOrg) {
	o.Annotations = map[string]string{glaceonv1alpha1.AnnotationDefaultFlyOrg: "true"}
}

func namespaces(p ...string) orgOption {
	return func(o *glaceonv1alpha1.FlyOrg) { o.Spec.Namespaces = p }
}

func notReady(reason, msg string) orgOption {
	return func(o *glaceonv1alpha1.FlyOrg) {
		o.Status.Conditions[0].Status, o.Status.Conditions[0].Reason, o.Status.Conditions[0].Message = metav1.ConditionFalse, reason, msg
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name      string
		orgs      []glaceonv1alpha1.FlyOrg
		pod, ns   string
		want      string // FlyOrg picked, or
		wantError string
	}{
		{name: "the only FlyOrg is the default", orgs: []glaceonv1alpha1.FlyOrg{newOrg("personal")}, ns: "default", want: "personal"},
		{name: "the annotated default", orgs: []glaceonv1alpha1.FlyOrg{newOrg("acme"), newOrg("personal", isDefault)}, ns: "default", want: "personal"},
		{name: "named by the pod", orgs: []glaceonv1alpha1.FlyOrg{newOrg("acme", namespaces("team-*")), newOrg("personal", isDefault)}, pod: "acme", ns: "team-a", want: "acme"},
		{name: "namespace not in its patterns", orgs: []glaceonv1alpha1.FlyOrg{newOrg("acme", namespaces("team-*")), newOrg("personal", isDefault)}, pod: "acme", ns: "shop",
			wantError: `namespace "shop" may not use FlyOrg "acme" (it may use personal)`},
		{name: "unknown FlyOrg looks like a forbidden one", orgs: []glaceonv1alpha1.FlyOrg{newOrg("personal")}, pod: "nope", ns: "shop",
			wantError: `may not use FlyOrg "nope"`},
		{name: "no default among several", orgs: []glaceonv1alpha1.FlyOrg{newOrg("acme"), newOrg("personal")}, ns: "shop", wantError: "no default FlyOrg: set glaceon.fly/org on the pod (it may use acme, personal)"},
		{name: "two defaults", orgs: []glaceonv1alpha1.FlyOrg{newOrg("acme", isDefault), newOrg("personal", isDefault)}, ns: "shop", wantError: "several FlyOrgs are marked glaceon.fly/default=true (acme, personal)"},
		{name: "no FlyOrg at all", ns: "shop", wantError: "no FlyOrg exists in this cluster"},
		{name: "default not for this namespace", orgs: []glaceonv1alpha1.FlyOrg{newOrg("personal", namespaces("team-a"))}, ns: "shop", wantError: `may not use the default FlyOrg "personal" (it may use none)`},
		{name: "not ready: the reason and Fly's message", orgs: []glaceonv1alpha1.FlyOrg{newOrg("personal", notReady(ReasonUnauthorized, "the Fly API rejected the token"))}, ns: "shop",
			wantError: `FlyOrg "personal" is not ready (Unauthorized): the Fly API rejected the token`},
		{name: "a check Fly did not answer does not deny", orgs: []glaceonv1alpha1.FlyOrg{newOrg("personal", notReady(ReasonFlyUnavailable, "timeout"))}, ns: "shop", want: "personal"},
		{name: "never checked", orgs: []glaceonv1alpha1.FlyOrg{newOrg("personal", func(o *glaceonv1alpha1.FlyOrg) { o.Status = glaceonv1alpha1.FlyOrgStatus{} })}, ns: "shop",
			wantError: `FlyOrg "personal" is not ready (not checked yet)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Resolve(tt.orgs, tt.pod, tt.ns)
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("Resolve = %v, %v; want error with %q", got, err, tt.wantError)
				}
				return
			}
			if err != nil || got.Name != tt.want {
				t.Fatalf("Resolve = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

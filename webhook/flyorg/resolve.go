package flyorg

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
)

// Allows reports whether pods in namespace may use org.
func Allows(org *glaceonv1alpha1.FlyOrg, namespace string) bool {
	return slices.ContainsFunc(org.Spec.Namespaces, func(pat string) bool {
		ok, _ := path.Match(pat, namespace)
		return ok
	})
}

// Resolve picks the FlyOrg of a pod in namespace from orgs: the one named
// name (the pod's glaceon.fly/org), or the default when name is empty (the
// FlyOrg annotated glaceon.fly/default=true, or the only FlyOrg). It checks
// that namespace may use it and that it is Ready. The error is a denial
// that names the FlyOrg and the fix; it lists only FlyOrgs the namespace
// may use.
func Resolve(orgs []glaceonv1alpha1.FlyOrg, name, namespace string) (*glaceonv1alpha1.FlyOrg, error) {
	var org *glaceonv1alpha1.FlyOrg
	if name != "" {
		for i := range orgs {
			if orgs[i].Name == name {
				org = &orgs[i]
			}
		}
		if org == nil || !Allows(org, namespace) {
			return nil, fmt.Errorf("namespace %q may not use FlyOrg %q (%s): ask a cluster admin to create it or to add the namespace to its spec.namespaces", namespace, name, usable(orgs, namespace))
		}
	} else {
		var defaults []*glaceonv1alpha1.FlyOrg
		for i := range orgs {
			if orgs[i].IsDefault() {
				defaults = append(defaults, &orgs[i])
			}
		}
		switch {
		case len(defaults) == 1:
			org = defaults[0]
		case len(defaults) > 1:
			var names []string
			for _, d := range defaults {
				names = append(names, d.Name)
			}
			return nil, fmt.Errorf("several FlyOrgs are marked %s=true (%s): set glaceon.fly/org on the pod, or ask a cluster admin to keep one default", glaceonv1alpha1.AnnotationDefaultFlyOrg, strings.Join(names, ", "))
		case len(orgs) == 1:
			org = &orgs[0]
		case len(orgs) == 0:
			return nil, fmt.Errorf("no FlyOrg exists in this cluster: ask a cluster admin to create one (see the README, \"Install\")")
		default:
			return nil, fmt.Errorf("no default FlyOrg: set glaceon.fly/org on the pod (%s), or ask a cluster admin to mark one %s=true", usable(orgs, namespace), glaceonv1alpha1.AnnotationDefaultFlyOrg)
		}
		if !Allows(org, namespace) {
			return nil, fmt.Errorf("namespace %q may not use the default FlyOrg %q (%s): set glaceon.fly/org, or ask a cluster admin to add the namespace to its spec.namespaces", namespace, org.Name, usable(orgs, namespace))
		}
	}
	if !org.DeletionTimestamp.IsZero() {
		return nil, fmt.Errorf("FlyOrg %q is being deleted: use another one (%s)", org.Name, usable(orgs, namespace))
	}
	ready := meta.FindStatusCondition(org.Status.Conditions, glaceonv1alpha1.ConditionReady)
	switch {
	case ready == nil || org.Status.OrganizationID == "":
		msg := "not checked yet"
		if ready != nil && ready.Message != "" {
			msg = ready.Message
		}
		return nil, fmt.Errorf("FlyOrg %q is not ready (%s); retrying is safe once `kubectl get flyorg %s` shows Ready=True", org.Name, msg, org.Name)
	case ready.Status != metav1.ConditionTrue && ready.Reason != ReasonFlyUnavailable:
		// An unanswered check says nothing about the token: the Fly call
		// of the admission will tell.
		return nil, fmt.Errorf("FlyOrg %q is not ready (%s): %s", org.Name, ready.Reason, ready.Message)
	}
	return org, nil
}

// usable lists the FlyOrgs namespace may use, for messages.
func usable(orgs []glaceonv1alpha1.FlyOrg, namespace string) string {
	var names []string
	for i := range orgs {
		if Allows(&orgs[i], namespace) {
			names = append(names, orgs[i].Name)
		}
	}
	if len(names) == 0 {
		return "it may use none"
	}
	slices.Sort(names)
	return "it may use " + strings.Join(names, ", ")
}

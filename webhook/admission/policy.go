package admission

import (
	"context"
	"fmt"
	"path"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// PolicyKey is the key of the org policy in its ConfigMap.
const PolicyKey = "policy.yaml"

// OrgPolicy says which namespaces may put peers in which Fly orgs. In YAML
// (the ConfigMap's policy.yaml):
//
//	orgs:
//	  personal: ["*"]          # every namespace
//	  acme: ["team-a", "ci-*"] # path.Match patterns
//
// Without a ConfigMap, every namespace may use the default org and no other.
type OrgPolicy struct {
	Orgs map[string][]string `json:"orgs"`
}

// ParseOrgPolicy parses and checks a policy document.
func ParseOrgPolicy(data []byte) (*OrgPolicy, error) {
	var p OrgPolicy
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return nil, fmt.Errorf("parse org policy: %w", err)
	}
	for org, patterns := range p.Orgs {
		for _, pat := range patterns {
			if _, err := path.Match(pat, ""); err != nil {
				return nil, fmt.Errorf("org policy: orgs.%s: bad namespace pattern %q: %w", org, pat, err)
			}
		}
	}
	return &p, nil
}

// Allows reports whether namespace may use org.
func (p *OrgPolicy) Allows(org, namespace string) bool {
	return slices.ContainsFunc(p.Orgs[org], func(pat string) bool {
		ok, _ := path.Match(pat, namespace)
		return ok
	})
}

// PolicySource reads the org policy from a ConfigMap on every admission
// through the manager's cache, so edits apply within seconds and no
// restart is needed.
type PolicySource struct {
	Reader     client.Reader
	ConfigMap  types.NamespacedName
	DefaultOrg string
}

// Check returns nil when namespace may use org, else an error that names
// the policy to change.
func (s *PolicySource) Check(ctx context.Context, org, namespace string) error {
	p, err := s.load(ctx)
	if err != nil {
		return err
	}
	if p.Allows(org, namespace) {
		return nil
	}
	if s.Reader == nil || s.ConfigMap.Name == "" {
		return fmt.Errorf("namespace %q may not use Fly org %q: only the default org %q is allowed; ask a cluster admin to configure the org policy", namespace, org, s.DefaultOrg)
	}
	return fmt.Errorf("namespace %q may not use Fly org %q: ask a cluster admin to add it under orgs.%s in %s[%s]", namespace, org, org, s.ConfigMap, PolicyKey)
}

func (s *PolicySource) load(ctx context.Context) (*OrgPolicy, error) {
	fallback := &OrgPolicy{}
	if s.DefaultOrg != "" {
		fallback.Orgs = map[string][]string{s.DefaultOrg: {"*"}}
	}
	if s.Reader == nil || s.ConfigMap.Name == "" {
		return fallback, nil
	}
	var cm corev1.ConfigMap
	if err := s.Reader.Get(ctx, s.ConfigMap, &cm); err != nil {
		if apierrors.IsNotFound(err) {
			return fallback, nil
		}
		return nil, fmt.Errorf("read org policy %s: %w", s.ConfigMap, err)
	}
	data, ok := cm.Data[PolicyKey]
	if !ok {
		return nil, fmt.Errorf("org policy %s has no %s key; add it or delete the ConfigMap", s.ConfigMap, PolicyKey)
	}
	p, err := ParseOrgPolicy([]byte(data))
	if err != nil {
		return nil, fmt.Errorf("org policy %s is invalid (fix it, pods using glaceon are denied until then): %w", s.ConfigMap, err)
	}
	return p, nil
}

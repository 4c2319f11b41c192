// Package podsecurity checks pods against Pod Security "restricted" with
// the upstream evaluator (k8s.io/pod-security-admission), for tests.
package podsecurity

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// RestrictedFailures evaluates a pod (or a pod template's metadata and
// spec) against the latest Pod Security "restricted" level and returns the
// failures, each "reason: detail".
func RestrictedFailures(tb testing.TB, meta *metav1.ObjectMeta, spec *corev1.PodSpec) []string {
	tb.Helper()
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	level := api.LevelVersion{Level: api.LevelRestricted, Version: api.LatestVersion()}
	var failures []string
	for _, r := range evaluator.EvaluatePod(level, meta, spec) {
		if !r.Allowed {
			failures = append(failures, r.ForbiddenReason+": "+r.ForbiddenDetail)
		}
	}
	return failures
}

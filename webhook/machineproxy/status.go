package machineproxy

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
)

// observed is what one reconcile saw and did, from which the status
// follows.
type observed struct {
	// invalid lists why the spec cannot be served; nothing else applies then.
	invalid field.ErrorList
	targets []proxyTarget
	// deployment is the proxy Deployment as last written or read; nil if
	// it does not exist (yet).
	deployment *appsv1.Deployment
	// conflict names a child that exists and belongs to someone else.
	conflict string
	// applyErr is a failure to write a child.
	applyErr error
}

// setStatus writes the status that obs implies into mp.Status. Conditions
// keep their lastTransitionTime unless their status changes.
func setStatus(mp *glaceonv1alpha1.MachineProxy, obs observed, opts Options) {
	st := &mp.Status
	st.ObservedGeneration = mp.Generation
	st.ServiceDNSName = serviceDNSName(mp, opts.ClusterDomain)
	st.Selector = labels.SelectorFromSet(selectorLabels(mp)).String()
	cond := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: mp.Generation,
		})
	}

	if len(obs.invalid) > 0 {
		msg := "the spec cannot be served: " + obs.invalid.ToAggregate().Error()
		cond(glaceonv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonInvalidSpec, msg)
		cond(glaceonv1alpha1.ConditionProgressing, metav1.ConditionFalse, ReasonInvalidSpec, "nothing changes until the spec is fixed; a proxy that ran a valid spec keeps running it")
		cond(glaceonv1alpha1.ConditionDegraded, metav1.ConditionTrue, ReasonInvalidSpec, msg)
		// Replica counts and targets keep describing what still runs.
		if d := obs.deployment; d != nil {
			st.Replicas, st.ReadyReplicas = d.Status.Replicas, d.Status.ReadyReplicas
		}
		return
	}
	st.Targets = statusTargets(obs.targets)

	desired := replicasOf(mp)
	d := obs.deployment
	var ready, current, updated int32
	if d != nil {
		ready, current, updated = d.Status.ReadyReplicas, d.Status.Replicas, d.Status.UpdatedReplicas
	}
	st.Replicas, st.ReadyReplicas = current, ready

	// Ready: does the Service answer?
	switch {
	case desired == 0:
		cond(glaceonv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonScaledToZero,
			"replicas is 0: the Service has no endpoints and the proxy holds no Fly peers")
	case ready > 0:
		cond(glaceonv1alpha1.ConditionReady, metav1.ConditionTrue, ReasonReplicasReady,
			fmt.Sprintf("%d/%d replicas ready; %s", ready, desired, readinessNote))
	default:
		cond(glaceonv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonNoReplicasReady,
			fmt.Sprintf("0/%d replicas ready (%d pods exist); %s", desired, current, readinessNote))
	}

	// Progressing: is the Deployment still converging on the spec?
	switch {
	case d == nil:
		cond(glaceonv1alpha1.ConditionProgressing, metav1.ConditionTrue, ReasonProvisioning, "creating the proxy Deployment")
	case d.Status.ObservedGeneration < d.Generation || updated < desired || current != desired || ready < desired:
		cond(glaceonv1alpha1.ConditionProgressing, metav1.ConditionTrue, ReasonRollingOut,
			fmt.Sprintf("%d/%d replicas updated, %d ready, %d pods in total; each new pod gets its own Fly peer at admission", updated, desired, ready, current))
	default:
		cond(glaceonv1alpha1.ConditionProgressing, metav1.ConditionFalse, ReasonRolloutComplete,
			fmt.Sprintf("%d/%d replicas run the current spec and are ready", ready, desired))
	}

	// Degraded: does something need a human?
	reason, msg := degraded(obs)
	if reason == "" {
		cond(glaceonv1alpha1.ConditionDegraded, metav1.ConditionFalse, ReasonAsExpected, "no problem seen")
	} else {
		cond(glaceonv1alpha1.ConditionDegraded, metav1.ConditionTrue, reason, msg)
	}
}

// degraded returns the most pressing problem, or "" when there is none.
func degraded(obs observed) (reason, msg string) {
	if obs.conflict != "" {
		return ReasonNameConflict, obs.conflict
	}
	if obs.applyErr != nil {
		return ReasonApplyFailed, obs.applyErr.Error()
	}
	d := obs.deployment
	if d == nil {
		return "", ""
	}
	for _, c := range d.Status.Conditions {
		// The ReplicaSet controller's create errors, copied by the
		// Deployment controller; a webhook denial reads "admission webhook
		// "pods.glaceon.fly" denied the request: glaceon: …".
		if c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue {
			return ReasonPodsRejected, "proxy pods cannot be created: " + c.Message
		}
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded" {
			return ReasonRolloutStalled, "the rollout exceeded its progress deadline: " + c.Message
		}
	}
	return "", ""
}

package machineproxy

import (
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	glaceonv1alpha1 "github.com/glaceon/glaceon/webhook/api/v1alpha1"
)

// depOption changes a fixture built by newDeployment.
type depOption func(*appsv1.Deployment)

// newDeployment is a proxy Deployment (generation 1, observed) with the
// given status counts: existing pods, updated pods, ready pods.
func newDeployment(current, updated, ready int32, opts ...depOption) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Generation: 1},
		Status: appsv1.DeploymentStatus{
			ObservedGeneration: 1,
			Replicas:           current,
			UpdatedReplicas:    updated,
			ReadyReplicas:      ready,
			AvailableReplicas:  ready,
		},
	}
	for _, opt := range opts {
		opt(d)
	}
	return d
}

func withDeploymentCondition(typ appsv1.DeploymentConditionType, status corev1.ConditionStatus, reason, msg string) depOption {
	return func(d *appsv1.Deployment) {
		d.Status.Conditions = append(d.Status.Conditions, appsv1.DeploymentCondition{Type: typ, Status: status, Reason: reason, Message: msg})
	}
}

func unobserved(d *appsv1.Deployment) { d.Generation = 2 }

func TestSetStatus(t *testing.T) {
	type want struct {
		ready, progressing, degraded string // reasons
		msg                          string // substring of the first non-empty message checked: Ready's
		replicas, readyReplicas      int32
	}
	targets, _ := proxyTargets(newMachineProxy())
	tests := map[string]struct {
		mp   *glaceonv1alpha1.MachineProxy
		obs  observed
		want want
	}{
		"nothing yet": {
			mp:   newMachineProxy(),
			obs:  observed{targets: targets},
			want: want{ready: ReasonNoReplicasReady, progressing: ReasonProvisioning, degraded: ReasonAsExpected, msg: "Ready condition"},
		},
		"pods exist, none ready (no kubelet)": {
			mp:   newMachineProxy(),
			obs:  observed{targets: targets, deployment: newDeployment(2, 2, 0)},
			want: want{ready: ReasonNoReplicasReady, progressing: ReasonRollingOut, degraded: ReasonAsExpected, msg: "0/2 replicas ready (2 pods exist)", replicas: 2},
		},
		"one of two ready": {
			mp:   newMachineProxy(),
			obs:  observed{targets: targets, deployment: newDeployment(2, 2, 1)},
			want: want{ready: ReasonReplicasReady, progressing: ReasonRollingOut, degraded: ReasonAsExpected, msg: "1/2 replicas ready", replicas: 2, readyReplicas: 1},
		},
		"all ready": {
			mp:   newMachineProxy(withReplicas(3)),
			obs:  observed{targets: targets, deployment: newDeployment(3, 3, 3)},
			want: want{ready: ReasonReplicasReady, progressing: ReasonRolloutComplete, degraded: ReasonAsExpected, msg: "3/3", replicas: 3, readyReplicas: 3},
		},
		"deployment controller has not seen the new spec": {
			mp:   newMachineProxy(),
			obs:  observed{targets: targets, deployment: newDeployment(2, 2, 2, unobserved)},
			want: want{ready: ReasonReplicasReady, progressing: ReasonRollingOut, degraded: ReasonAsExpected, replicas: 2, readyReplicas: 2},
		},
		"scaling down": {
			mp:   newMachineProxy(withReplicas(1)),
			obs:  observed{targets: targets, deployment: newDeployment(3, 3, 3)},
			want: want{ready: ReasonReplicasReady, progressing: ReasonRollingOut, degraded: ReasonAsExpected, replicas: 3, readyReplicas: 3},
		},
		"scaled to zero": {
			mp:   newMachineProxy(withReplicas(0)),
			obs:  observed{targets: targets, deployment: newDeployment(0, 0, 0)},
			want: want{ready: ReasonScaledToZero, progressing: ReasonRolloutComplete, degraded: ReasonAsExpected, msg: "replicas is 0"},
		},
		"webhook denies the pods": {
			mp: newMachineProxy(),
			obs: observed{targets: targets, deployment: newDeployment(0, 0, 0,
				withDeploymentCondition(appsv1.DeploymentReplicaFailure, corev1.ConditionTrue, "FailedCreate", `admission webhook "pods.glaceon.fly" denied the request: glaceon: Fly org "nope" not found`))},
			want: want{ready: ReasonNoReplicasReady, progressing: ReasonRollingOut, degraded: ReasonPodsRejected},
		},
		"rollout stalled": {
			mp: newMachineProxy(),
			obs: observed{targets: targets, deployment: newDeployment(3, 1, 2,
				withDeploymentCondition(appsv1.DeploymentProgressing, corev1.ConditionFalse, "ProgressDeadlineExceeded", "ReplicaSet has timed out progressing."))},
			want: want{ready: ReasonReplicasReady, progressing: ReasonRollingOut, degraded: ReasonRolloutStalled, replicas: 3, readyReplicas: 2},
		},
		"name conflict": {
			mp:   newMachineProxy(),
			obs:  observed{targets: targets, conflict: "Service proxy already exists and belongs to no MachineProxy"},
			want: want{ready: ReasonNoReplicasReady, progressing: ReasonProvisioning, degraded: ReasonNameConflict},
		},
		"apply failed": {
			mp:   newMachineProxy(),
			obs:  observed{targets: targets, applyErr: errors.New("apply Deployment proxy: forbidden")},
			want: want{ready: ReasonNoReplicasReady, progressing: ReasonProvisioning, degraded: ReasonApplyFailed},
		},
		"invalid spec keeps the counts of what runs": {
			mp: newMachineProxy(),
			obs: observed{invalid: field.ErrorList{field.Invalid(field.NewPath("spec", "target"), "a.flycast,b.flycast", "both on port 80")},
				deployment: newDeployment(2, 2, 2)},
			want: want{ready: ReasonInvalidSpec, progressing: ReasonInvalidSpec, degraded: ReasonInvalidSpec, msg: "both on port 80", replicas: 2, readyReplicas: 2},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mp := tc.mp.DeepCopy()
			setStatus(mp, tc.obs, testOptions())
			st := mp.Status
			for typ, reason := range map[string]string{
				glaceonv1alpha1.ConditionReady:       tc.want.ready,
				glaceonv1alpha1.ConditionProgressing: tc.want.progressing,
				glaceonv1alpha1.ConditionDegraded:    tc.want.degraded,
			} {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil || c.Reason != reason || c.ObservedGeneration != mp.Generation {
					t.Errorf("%s = %+v, want reason %s at generation %d", typ, c, reason, mp.Generation)
				}
			}
			if c := meta.FindStatusCondition(st.Conditions, glaceonv1alpha1.ConditionReady); c != nil && !strings.Contains(c.Message, tc.want.msg) {
				t.Errorf("Ready message %q does not contain %q", c.Message, tc.want.msg)
			}
			if st.Replicas != tc.want.replicas || st.ReadyReplicas != tc.want.readyReplicas {
				t.Errorf("replicas %d ready %d, want %d and %d", st.Replicas, st.ReadyReplicas, tc.want.replicas, tc.want.readyReplicas)
			}
			if st.ObservedGeneration != mp.Generation || st.ServiceDNSName != "proxy.flycast.svc.cluster.local" ||
				st.Selector != "app.kubernetes.io/instance=proxy,app.kubernetes.io/name=glaceon-machineproxy" {
				t.Errorf("status = %+v", st)
			}
		})
	}
}

// TestSetStatusKeepsTransitionTimes: a reconcile that sees the same state
// must not move lastTransitionTime (nor, so, write the status).
func TestSetStatusKeepsTransitionTimes(t *testing.T) {
	mp := newMachineProxy()
	targets, _ := proxyTargets(mp)
	obs := observed{targets: targets, deployment: newDeployment(2, 2, 1)}
	setStatus(mp, obs, testOptions())
	past := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	for i := range mp.Status.Conditions {
		mp.Status.Conditions[i].LastTransitionTime = past
	}
	before := mp.Status.DeepCopy()
	setStatus(mp, obs, testOptions())
	for i, c := range mp.Status.Conditions {
		if !c.LastTransitionTime.Equal(&before.Conditions[i].LastTransitionTime) {
			t.Errorf("%s moved its lastTransitionTime", c.Type)
		}
	}
}

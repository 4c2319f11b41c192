package controlplane_test

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/glaceon/glaceon/hack/controlplane"
)

// TestDeploymentCreatesPods proves the control plane is complete enough for
// the webhook tests: a Deployment becomes a ReplicaSet and pods created with
// generateName, and deleting it lets the garbage collector remove them.
func TestDeploymentCreatesPods(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Options{})
	c, err := client.New(cp.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "smoke"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "smoke"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns.Name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}},
			},
		},
	}
	if err := c.Create(ctx, deploy); err != nil {
		t.Fatal(err)
	}

	var pods corev1.PodList
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := c.List(ctx, &pods, client.InNamespace(ns.Name)); err != nil {
			return false, err
		}
		return len(pods.Items) == 2, nil
	})
	if err != nil {
		t.Fatalf("deployment did not produce 2 pods (got %d): %v", len(pods.Items), err)
	}
	for _, p := range pods.Items {
		if !strings.HasPrefix(p.Name, "web-") || p.GenerateName == "" {
			t.Errorf("pod %q: want a generated name with prefix web-, generateName=%q", p.Name, p.GenerateName)
		}
		if len(p.OwnerReferences) != 1 || p.OwnerReferences[0].Kind != "ReplicaSet" {
			t.Errorf("pod %q: want one ReplicaSet owner, got %+v", p.Name, p.OwnerReferences)
		}
	}

	if err := c.Delete(ctx, deploy, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := c.List(ctx, &pods, client.InNamespace(ns.Name)); err != nil {
			return false, err
		}
		return len(pods.Items) == 0, nil
	})
	if err != nil {
		t.Fatalf("garbage collector did not remove the pods (%d left): %v", len(pods.Items), err)
	}
	var rs appsv1.ReplicaSetList
	if err := c.List(ctx, &rs, client.InNamespace(ns.Name)); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if len(rs.Items) != 0 {
		t.Errorf("garbage collector left %d ReplicaSets", len(rs.Items))
	}
}

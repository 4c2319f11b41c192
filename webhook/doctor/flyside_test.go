package doctor

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

func TestManagerFlag(t *testing.T) {
	dep := func(args ...string) *appsv1.Deployment {
		d := &appsv1.Deployment{}
		d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "manager", Args: args}}
		return d
	}
	for _, tc := range []struct {
		name string
		dep  *appsv1.Deployment
		want string
	}{
		{"--name=value", dep("manager", "--peer-prefix=k8s-prod-"), "k8s-prod-"},
		{"-name value", dep("manager", "-peer-prefix", "k8s-prod-"), "k8s-prod-"},
		{"absent", dep("manager", "--cluster-name=east"), ""},
		{"a value that looks like the name is not the flag", dep("manager", "--other", "peer-prefix"), ""},
		{"a longer flag is not the flag", dep("manager", "--peer-prefix-x=a"), ""},
		{"no containers", &appsv1.Deployment{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := managerFlag(tc.dep, "peer-prefix"); got != tc.want {
				t.Errorf("managerFlag = %q, want %q", got, tc.want)
			}
		})
	}
}

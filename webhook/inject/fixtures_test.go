package inject

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// testConfig is the injection config of every test: the shipped defaults
// with a fixed image and a default org.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Image = "registry.example/glaceon-sidecar:v0.0.0-test"
	cfg.DefaultOrg = "acme"
	return cfg
}

// testPeer is what admission would hand Inject for a provisioned peer.
func testPeer() Peer {
	return Peer{Name: "k8s-default-web-x7k2p", SecretName: "glaceon-peer-k8s-default-web-x7k2p"}
}

// podOption changes a fixture pod built by newPod.
type podOption func(*corev1.Pod)

// newPod builds pod "default/web" with one container "app" and the target
// annotation "twi-ollama.flycast:11434" (no privileged port), then applies opts.
func newPod(opts ...podOption) *corev1.Pod {
	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        "web",
			Namespace:   "default",
			Annotations: map[string]string{AnnotationTarget: "twi-ollama.flycast:11434"},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}},
		},
	}
	for _, opt := range opts {
		opt(pod)
	}
	return pod
}

func withAnnotation(key, value string) podOption {
	return func(p *corev1.Pod) { p.Annotations[key] = value }
}

func withoutAnnotation(key string) podOption {
	return func(p *corev1.Pod) { delete(p.Annotations, key) }
}

func withTargets(value string) podOption { return withAnnotation(AnnotationTarget, value) }

func withHostNetwork() podOption {
	return func(p *corev1.Pod) { p.Spec.HostNetwork = true }
}

func withWindows() podOption {
	return func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} }
}

func withContainer(c corev1.Container) podOption {
	return func(p *corev1.Pod) { p.Spec.Containers = append(p.Spec.Containers, c) }
}

func withInitContainer(c corev1.Container) podOption {
	return func(p *corev1.Pod) { p.Spec.InitContainers = append(p.Spec.InitContainers, c) }
}

// withAppPort declares a TCP containerPort on the first container.
func withAppPort(port int32) podOption {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: port})
	}
}

// withAppEnv sets an env var on the first container.
func withAppEnv(name, value string) podOption {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: name, Value: value})
	}
}

func withVolume(name string) podOption {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{
			Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
		})
	}
}

func withHostAlias(ip string, hostnames ...string) podOption {
	return func(p *corev1.Pod) {
		p.Spec.HostAliases = append(p.Spec.HostAliases, corev1.HostAlias{IP: ip, Hostnames: hostnames})
	}
}

func withSysctl(name, value string) podOption {
	return func(p *corev1.Pod) {
		if p.Spec.SecurityContext == nil {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{}
		}
		p.Spec.SecurityContext.Sysctls = append(p.Spec.SecurityContext.Sysctls, corev1.Sysctl{Name: name, Value: value})
	}
}

// withRestrictedApp makes the pod's own containers pass Pod Security
// "restricted", so that a failing check can only come from the sidecar.
func withRestrictedApp() podOption {
	return func(p *corev1.Pod) {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
		for i := range p.Spec.Containers {
			p.Spec.Containers[i].SecurityContext = &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			}
		}
	}
}

package inject

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestValidateReasons covers every reason Validate denies a pod for, with the
// exact message an admission denial shows.
func TestValidateReasons(t *testing.T) {
	tests := []struct {
		name string
		pod  *corev1.Pod
		cfg  func(*Config)
		want []string
	}{
		{
			name: "no target annotation",
			pod:  newPod(withoutAnnotation(AnnotationTarget)),
			want: []string{`metadata.annotations[glaceon.fly/target]: Required value: add it to opt in to glaceon, e.g. "twi-ollama", "db.internal:5432" or "http://twi-ollama.flycast"`},
		},
		{
			name: "bad target",
			pod:  newPod(withTargets("example.com:80")),
			want: []string{`metadata.annotations[glaceon.fly/target]: Invalid value: "example.com:80": host "example.com" is not a Fly private host: it must end in .flycast or .internal (e.g. twi-ollama.flycast)`},
		},
		{
			name: "bad org",
			pod:  newPod(withAnnotation(AnnotationOrg, "Acme")),
			want: []string{"metadata.annotations[glaceon.fly/org]: Invalid value: \"Acme\": not a Fly org slug: use the slug `fly orgs list` shows (lower-case letters, digits and '-')"},
		},
		{
			name: "no org anywhere",
			pod:  newPod(),
			cfg:  func(c *Config) { c.DefaultOrg = "" },
			want: []string{"metadata.annotations[glaceon.fly/org]: Required value: the webhook has no default org; set it to your Fly org slug (see `fly orgs list`)"},
		},
		{
			name: "bad org and no default is one error",
			pod:  newPod(withAnnotation(AnnotationOrg, "")),
			cfg:  func(c *Config) { c.DefaultOrg = "" },
			want: []string{"metadata.annotations[glaceon.fly/org]: Invalid value: \"\": the org slug is empty; set it (see `fly orgs list`) or remove the annotation to use the default org"},
		},
		{
			name: "bad region",
			pod:  newPod(withAnnotation(AnnotationRegion, "IAD")),
			want: []string{"metadata.annotations[glaceon.fly/region]: Invalid value: \"IAD\": not a Fly region code: use three lower-case letters such as iad or ams (see `fly platform regions`), or remove the annotation for the default"},
		},
		{
			name: "bad inject mode",
			pod:  newPod(withAnnotation(AnnotationInjectMode, "sidecar")),
			want: []string{`metadata.annotations[glaceon.fly/inject-mode]: Invalid value: "sidecar": use "native" (init container with restartPolicy Always, Kubernetes 1.29+), "classic" (regular container, older clusters) or "peer-only" (the pod runs glaceon-sidecar itself), or remove the annotation for the default`},
		},
		{
			name: "bad transport",
			pod:  newPod(withAnnotation(AnnotationTransport, "tcp")),
			want: []string{`metadata.annotations[glaceon.fly/transport]: Invalid value: "tcp": use "auto" (UDP, falling back to WebSocket over TCP 443), "udp" or "websocket", or remove the annotation for auto`},
		},
		{
			name: "peer-only without the peer volume",
			pod:  newPod(withAnnotation(AnnotationInjectMode, "peer-only")),
			want: []string{`spec.volumes: Required value: peer-only mode binds the pod's Secret volume named glaceon-peer; add it (secret: {secretName: glaceon-peer-placeholder})`},
		},
		{
			name: "target on the health port",
			pod:  newPod(withTargets("metrics.internal:9901")),
			want: []string{`metadata.annotations[glaceon.fly/target]: Invalid value: "metrics.internal:9901": port 9901 is the sidecar's health port; ask the cluster admin to move the health port (webhook config) to reach this target`},
		},
		{
			name: "host network",
			pod:  newPod(withHostNetwork()),
			want: []string{"spec.hostNetwork: Forbidden: glaceon's loopback listeners would land on the node's network; remove hostNetwork or reach the app through a MachineProxy"},
		},
		{
			name: "windows pod",
			pod:  newPod(withWindows()),
			want: []string{"spec.os.name: Forbidden: the glaceon sidecar is a Linux container; remove glaceon.fly/target from Windows pods"},
		},
		{
			name: "container named like the sidecar",
			pod:  newPod(withContainer(corev1.Container{Name: SidecarContainerName, Image: "x"})),
			want: []string{`spec.containers[1].name: Invalid value: "glaceon-sidecar": the name is reserved for glaceon's sidecar; rename this container`},
		},
		{
			name: "init container named like the sidecar",
			pod:  newPod(withInitContainer(corev1.Container{Name: SidecarContainerName, Image: "x"})),
			want: []string{`spec.initContainers[0].name: Invalid value: "glaceon-sidecar": the name is reserved for glaceon's sidecar; rename this container`},
		},
		{
			name: "volume named like ours",
			pod:  newPod(withVolume(PeerVolumeName)),
			want: []string{`spec.volumes[0].name: Invalid value: "glaceon-peer": the name is reserved for glaceon's peer Secret volume; rename this volume`},
		},
		{
			name: "app port taken by a target",
			pod:  newPod(withTargets("twi-ollama"), withAppPort(80)),
			want: []string{"spec.containers[0].ports[0].containerPort: Invalid value: 80: the sidecar listens on 127.0.0.2:80 for target twi-ollama.flycast:80, and an app listening on all addresses cannot share the port; move the app to another port or drop the target"},
		},
		{
			name: "app port is the health port",
			pod:  newPod(withAppPort(9901)),
			want: []string{"spec.containers[0].ports[0].containerPort: Invalid value: 9901: the port is the glaceon sidecar's health port; move the app to another port, or ask the cluster admin to move the health port"},
		},
		{
			name: "udp port does not conflict",
			pod: newPod(withTargets("twi-ollama"), func(p *corev1.Pod) {
				p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, Protocol: corev1.ProtocolUDP}}
			}),
		},
		{
			name: "env var glaceon sets",
			pod:  newPod(withAppEnv("GLACEON_TARGET_0_ADDR", "x")),
			want: []string{`spec.containers[0].env[0].name: Invalid value: "GLACEON_TARGET_0_ADDR": glaceon sets this variable to a target's local address; rename it`},
		},
		{
			name: "host alias maps our host elsewhere",
			pod:  newPod(withHostAlias("10.1.2.3", "twi-ollama.flycast")),
			want: []string{"spec.hostAliases[0].hostnames[0]: Invalid value: \"twi-ollama.flycast\": glaceon maps this host to the sidecar at 127.0.0.2, but this entry maps it to 10.1.2.3; remove the entry"},
		},
		{
			name: "host alias takes our loopback address",
			pod:  newPod(withHostAlias("127.0.0.2", "cache.local")),
			want: []string{`spec.hostAliases[0].ip: Invalid value: "127.0.0.2": the address is the sidecar's listener for twi-ollama.flycast, so "cache.local" would reach that target; use another address`},
		},
		{
			name: "host alias agreeing with glaceon is fine",
			pod:  newPod(withHostAlias("127.0.0.2", "twi-ollama.flycast")),
		},
		{
			name: "sysctl too high for a privileged port",
			pod:  newPod(withTargets("twi-ollama"), withSysctl(SysctlUnprivilegedPortStart, "1024")),
			want: []string{`spec.securityContext.sysctls[0].value: Invalid value: "1024": the non-root sidecar must listen on port 80 for target twi-ollama.flycast:80; set it to 80 or lower, or remove it and glaceon sets it`},
		},
		{
			name: "sysctl above an unprivileged target port",
			pod:  newPod(withTargets("db.internal:5432"), withSysctl(SysctlUnprivilegedPortStart, "6000")),
			want: []string{`spec.securityContext.sysctls[0].value: Invalid value: "6000": the non-root sidecar must listen on port 5432 for target db.internal:5432; set it to 5432 or lower, or remove it and glaceon sets it`},
		},
		{
			name: "sysctl not a number",
			pod:  newPod(withTargets("twi-ollama"), withSysctl(SysctlUnprivilegedPortStart, "low")),
			want: []string{`spec.securityContext.sysctls[0].value: Invalid value: "low": not a port number; set it to a number, or remove it and glaceon sets it`},
		},
		{
			name: "every problem at once",
			pod: newPod(
				withTargets("twi-ollama,example.com:80"),
				withAnnotation(AnnotationRegion, "IAD"),
				withHostNetwork(),
				withAppPort(80),
				withContainer(corev1.Container{Name: SidecarContainerName, Image: "x"}),
				withVolume(PeerVolumeName),
				withSysctl(SysctlUnprivilegedPortStart, "1024"),
			),
			want: []string{
				`metadata.annotations[glaceon.fly/target]: Invalid value: "example.com:80": host "example.com" is not a Fly private host: it must end in .flycast or .internal (e.g. twi-ollama.flycast)`,
				"metadata.annotations[glaceon.fly/region]: Invalid value: \"IAD\": not a Fly region code: use three lower-case letters such as iad or ams (see `fly platform regions`), or remove the annotation for the default",
				"spec.hostNetwork: Forbidden: glaceon's loopback listeners would land on the node's network; remove hostNetwork or reach the app through a MachineProxy",
				"spec.containers[0].ports[0].containerPort: Invalid value: 80: the sidecar listens on 127.0.0.2:80 for target twi-ollama.flycast:80, and an app listening on all addresses cannot share the port; move the app to another port or drop the target",
				`spec.containers[1].name: Invalid value: "glaceon-sidecar": the name is reserved for glaceon's sidecar; rename this container`,
				`spec.volumes[0].name: Invalid value: "glaceon-peer": the name is reserved for glaceon's peer Secret volume; rename this volume`,
				`spec.securityContext.sysctls[0].value: Invalid value: "1024": the non-root sidecar must listen on port 80 for target twi-ollama.flycast:80; set it to 80 or lower, or remove it and glaceon sets it`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			got := errorMessages(Validate(tt.pod, cfg))
			if len(got) == 0 {
				got = nil
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Validate:\n got %q\nwant %q", got, tt.want)
			}

			// Inject denies with exactly the same reasons.
			_, err := Inject(tt.pod, cfg, testPeer())
			var invalid *InvalidPodError
			switch {
			case tt.want == nil && err != nil:
				t.Errorf("Inject: %v", err)
			case tt.want != nil && !errors.As(err, &invalid):
				t.Errorf("Inject error = %v, want *InvalidPodError", err)
			case tt.want != nil && !reflect.DeepEqual(errorMessages(invalid.Errors), tt.want):
				t.Errorf("Inject reasons differ from Validate: %v", invalid.Errors)
			}
		})
	}
}

func TestInjectDenialMessage(t *testing.T) {
	_, err := Inject(newPod(withHostNetwork(), withTargets("example.com:80")), testConfig(), testPeer())
	want := `pod cannot be injected: [metadata.annotations[glaceon.fly/target]: Invalid value: "example.com:80": host "example.com" is not a Fly private host: it must end in .flycast or .internal (e.g. twi-ollama.flycast), spec.hostNetwork: Forbidden: glaceon's loopback listeners would land on the node's network; remove hostNetwork or reach the app through a MachineProxy]`
	if err == nil || err.Error() != want {
		t.Errorf("Inject error:\n got %v\nwant %s", err, want)
	}
}

func TestInjectRejectsBadConfigAndPeer(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(*Config)
		peer Peer
		want string
	}{
		{"no image", func(c *Config) { c.Image = "" }, testPeer(), "invalid injection config: sidecar image is empty"},
		{"root sidecar", func(c *Config) { c.RunAsUser = 0 }, testPeer(), "invalid injection config: run-as user 0 is not a non-root uid"},
		{"bad mode", func(c *Config) { c.Mode = "auto" }, testPeer(), `invalid injection config: sidecar mode "auto" is not "native" or "classic"`},
		{"bad health host", func(c *Config) { c.HealthListenHost = "localhost" }, testPeer(), `invalid injection config: health listen host "localhost" is not :: (every address family) or 0.0.0.0 (IPv4 only)`},
		{"loopback health host", func(c *Config) { c.HealthListenHost = "127.0.0.1" }, testPeer(), `invalid injection config: health listen host "127.0.0.1" is not :: (every address family) or 0.0.0.0 (IPv4 only)`},
		{"metrics on the health port", func(c *Config) { c.MetricsPort = c.HealthPort }, testPeer(), `invalid injection config: metrics port 9901 is not 0 (off) or a port in 1-65535 other than the health port`},
		{"relative mount", func(c *Config) { c.SecretMountPath = "etc/glaceon" }, testPeer(), `invalid injection config: secret mount path "etc/glaceon" is not a clean absolute directory other than /`},
		{"bad peer name", nil, Peer{Name: "Web_1", SecretName: "s"}, `invalid peer: peer name "Web_1" is not 1-63 characters of [a-z0-9-]`},
		{"interactive peer name", nil, Peer{Name: "interactive-x", SecretName: "s"}, "invalid peer: peer name \"interactive-x\" must not start with interactive-"},
		{"no secret", nil, Peer{Name: "p"}, `invalid peer: secret name "": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			_, err := Inject(newPod(), cfg, tt.peer)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Inject error:\n got %v\nwant %s", err, tt.want)
			}
		})
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	if _, err := Inject(nil, testConfig(), testPeer()); err == nil {
		t.Error("Inject(nil) succeeded")
	}
}

func TestInjectDetails(t *testing.T) {
	t.Run("one loopback address per host", func(t *testing.T) {
		out, err := Inject(newPod(withTargets("db.internal:5432,twi-ollama,db.internal:6432")), testConfig(), testPeer())
		if err != nil {
			t.Fatal(err)
		}
		want := []corev1.HostAlias{
			{IP: "127.0.0.2", Hostnames: []string{"db.internal"}},
			{IP: "127.0.0.3", Hostnames: []string{"twi-ollama.flycast"}},
		}
		if !reflect.DeepEqual(out.Spec.HostAliases, want) {
			t.Errorf("hostAliases = %v, want %v", out.Spec.HostAliases, want)
		}
		args := strings.Join(out.Spec.InitContainers[0].Args, " ")
		wantArgs := "--wg-config /etc/glaceon/fly0.conf --forward 127.0.0.2:5432=db.internal:5432 --forward 127.0.0.3:80=twi-ollama.flycast:80 --forward 127.0.0.2:6432=db.internal:6432 --health-addr [::]:9901"
		if args != wantArgs {
			t.Errorf("args = %q\nwant %q", args, wantArgs)
		}
	})
	t.Run("listen host and metrics port from the config", func(t *testing.T) {
		cfg := testConfig()
		cfg.HealthListenHost, cfg.MetricsPort = "0.0.0.0", 9902
		out, err := Inject(newPod(withTargets("twi-ollama")), cfg, testPeer())
		if err != nil {
			t.Fatal(err)
		}
		c := out.Spec.InitContainers[0]
		if args, want := strings.Join(c.Args, " "), "--health-addr 0.0.0.0:9901 --metrics-addr 0.0.0.0:9902"; !strings.HasSuffix(args, want) {
			t.Errorf("args = %q, want the suffix %q", args, want)
		}
		if len(c.Ports) != 2 || c.Ports[1].Name != MetricsPortName || c.Ports[1].ContainerPort != 9902 {
			t.Errorf("ports = %v, want health and metrics", c.Ports)
		}
		_, err = Inject(newPod(withTargets("twi-ollama.flycast:9902")), cfg, testPeer())
		if err == nil || !strings.Contains(err.Error(), "port 9902 is the sidecar's metrics port") {
			t.Errorf("target on the metrics port: err = %v", err)
		}
	})
	t.Run("sixteen hosts fit in loopback", func(t *testing.T) {
		entries := make([]string, MaxTargets)
		for i := range entries {
			entries[i] = "app" + string(rune('a'+i))
		}
		out, err := Inject(newPod(withTargets(strings.Join(entries, ","))), testConfig(), testPeer())
		if err != nil {
			t.Fatal(err)
		}
		if last := out.Spec.HostAliases[MaxTargets-1].IP; last != "127.0.0.17" {
			t.Errorf("last loopback address = %s, want 127.0.0.17", last)
		}
	})
	t.Run("pod sysctl lower than needed is kept", func(t *testing.T) {
		out, err := Inject(newPod(withTargets("twi-ollama"), withSysctl(SysctlUnprivilegedPortStart, "53")), testConfig(), testPeer())
		if err != nil {
			t.Fatal(err)
		}
		if got := out.Spec.SecurityContext.Sysctls; len(got) != 1 || got[0].Value != "53" {
			t.Errorf("sysctls = %v, want the pod's own value only", got)
		}
	})
	t.Run("default-container annotation is respected", func(t *testing.T) {
		out, err := Inject(newPod(
			withAnnotation(AnnotationInjectMode, string(SidecarModeClassic)),
			withAnnotation(annotationKubectlDefaultContainer, "other"),
		), testConfig(), testPeer())
		if err != nil {
			t.Fatal(err)
		}
		if got := out.Annotations[annotationKubectlDefaultContainer]; got != "other" {
			t.Errorf("default container = %q, want the pod's own choice", got)
		}
	})
	t.Run("config mode classic", func(t *testing.T) {
		cfg := testConfig()
		cfg.Mode = SidecarModeClassic
		out, err := Inject(newPod(), cfg, testPeer())
		if err != nil {
			t.Fatal(err)
		}
		if out.Spec.Containers[0].Name != SidecarContainerName || len(out.Spec.InitContainers) != 0 ||
			out.Spec.Containers[0].RestartPolicy != nil {
			t.Errorf("classic mode: sidecar not the first regular container")
		}
	})
	t.Run("marker changes with the sidecar config, not with the peer", func(t *testing.T) {
		a, _ := Inject(newPod(), testConfig(), testPeer())
		b, _ := Inject(newPod(), testConfig(), PlaceholderPeer())
		cfg := testConfig()
		cfg.Image = "registry.example/glaceon-sidecar:v2"
		c, _ := Inject(newPod(), cfg, testPeer())
		if a.Annotations[AnnotationInjected] != b.Annotations[AnnotationInjected] {
			t.Error("marker depends on the peer")
		}
		if a.Annotations[AnnotationInjected] == c.Annotations[AnnotationInjected] {
			t.Error("marker ignores the sidecar image")
		}
	})
	t.Run("parse applies no defaults", func(t *testing.T) {
		req, errs := ParsePodAnnotations(newPod())
		if len(errs) > 0 || req.Org != "" || req.Mode != "" {
			t.Fatalf("ParsePodAnnotations = %+v, %v", req, errs)
		}
		req = req.WithDefaults(testConfig())
		if req.Org != "acme" || req.Mode != SidecarModeNative {
			t.Errorf("WithDefaults = %+v", req)
		}
	})
}

// FuzzInject feeds arbitrary annotation values through the whole pipeline:
// nothing panics, Validate and Inject agree, and an injected pod is stable.
func FuzzInject(f *testing.F) {
	f.Add("twi-ollama", "acme", "iad", "native")
	f.Add("http://twi-ollama.flycast,db.internal:5432", "", "", "classic")
	f.Add("x.internal:9901", "Bad", "xx", "auto")
	f.Fuzz(func(t *testing.T, target, org, region, mode string) {
		pod := newPod(withTargets(target))
		for key, value := range map[string]string{AnnotationOrg: org, AnnotationRegion: region, AnnotationInjectMode: mode} {
			if value != "" {
				pod.Annotations[key] = value
			}
		}
		cfg := testConfig()
		errs := Validate(pod, cfg)
		out, err := Inject(pod, cfg, testPeer())
		if (len(errs) == 0) != (err == nil) {
			t.Fatalf("Validate = %v but Inject error = %v", errs, err)
		}
		if err != nil {
			return
		}
		again, err := Inject(out, cfg, testPeer())
		if err != nil || !reflect.DeepEqual(again, out) {
			t.Fatalf("second injection changed the pod (err %v)", err)
		}
	})
}

// glaceon.fly/transport reaches the sidecar's command line; without it the
// sidecar keeps its default and the arguments stay as they were.
func TestTransportAnnotation(t *testing.T) {
	for _, tc := range []struct {
		value string // "" = no annotation
		want  []string
	}{
		{"", nil},
		{"auto", []string{"--transport", "auto"}},
		{"udp", []string{"--transport", "udp"}},
		{"websocket", []string{"--transport", "websocket"}},
	} {
		t.Run("transport="+tc.value, func(t *testing.T) {
			var opts []podOption
			if tc.value != "" {
				opts = append(opts, withAnnotation(AnnotationTransport, tc.value))
			}
			out, err := Inject(newPod(opts...), testConfig(), testPeer())
			if err != nil {
				t.Fatal(err)
			}
			var args []string
			for _, c := range append(out.Spec.InitContainers, out.Spec.Containers...) {
				if c.Name == SidecarContainerName {
					args = c.Args
				}
			}
			var got []string
			for i, a := range args {
				if a == "--transport" && i+1 < len(args) {
					got = args[i : i+2]
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("sidecar args %q: transport part %q, want %q", args, got, tc.want)
			}
		})
	}
}

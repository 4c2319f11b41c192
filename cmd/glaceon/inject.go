package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/glaceon/glaceon/webhook/inject"
)

// maxManifest bounds what `glaceon inject` reads.
const maxManifest = 4 << 20

func runInject(env *cliEnv, args []string) error {
	fs := newFlagSet(env, "inject", "glaceon inject -f pod.yaml [--org ORG] [--image IMAGE] [--mode native|classic]")
	file := fs.String("f", "", "pod manifest (YAML or JSON); - for stdin (required)")
	org := fs.String("org", "", "FlyOrg for pods without glaceon.fly/org, as the cluster's default FlyOrg (glaceon.fly/default=true)")
	region := fs.String("region", "", "default gateway region, as the FlyOrg's spec.defaultRegion")
	image := fs.String("image", inject.DefaultSidecarImage, "sidecar image")
	mode := fs.String("mode", string(inject.SidecarModeNative), "sidecar mode: native (init container, Kubernetes 1.29+) or classic")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return usagef("inject: -f is required (a pod manifest, or - for stdin)")
	}
	var r io.Reader = env.stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return fmt.Errorf("inject: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxManifest+1))
	if err != nil {
		return fmt.Errorf("inject: read %s: %w", *file, err)
	}
	if len(data) > maxManifest {
		return fmt.Errorf("inject: %s is larger than %d bytes", *file, maxManifest)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		return fmt.Errorf("inject: %s is not a pod manifest: %w", *file, err)
	}
	if pod.Kind != "Pod" {
		return fmt.Errorf("inject: %s has kind %q; only Pod is supported (for a Deployment, inject its template by hand or let the webhook do it)", *file, pod.Kind)
	}

	cfg := inject.DefaultConfig()
	cfg.DefaultOrg, cfg.DefaultRegion, cfg.Image, cfg.Mode = *org, *region, *image, inject.SidecarMode(*mode)
	if err := cfg.Validate(); err != nil {
		return usagef("inject: %v", err)
	}
	if !inject.WantsInjection(&pod) {
		return fmt.Errorf("inject: the pod has no %s annotation, so the webhook would leave it alone; add e.g. %s: twi-ollama.flycast", inject.AnnotationTarget, inject.AnnotationTarget)
	}
	// Offline, like a dry run: the peer and Secret names are placeholders.
	injected, err := inject.Inject(&pod, cfg, inject.PlaceholderPeer())
	if err != nil {
		var invalid *inject.InvalidPodError
		if errors.As(err, &invalid) {
			var b bytes.Buffer
			for _, e := range invalid.Errors {
				fmt.Fprintf(&b, "\n  - %s", e.Error())
			}
			return fmt.Errorf("inject: the webhook would deny this pod:%s", b.String())
		}
		return fmt.Errorf("inject: %w", err)
	}
	out, err := yaml.Marshal(injected)
	if err != nil {
		return fmt.Errorf("inject: encode: %w", err)
	}
	_, err = env.stdout.Write(out)
	return err
}

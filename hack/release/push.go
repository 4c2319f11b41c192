package main

import (
	"context"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// push sends every image index of the OCI layout in layoutDir to the
// reference recorded at build time. Credentials come from the docker
// config file (~/.docker/config.json, $DOCKER_CONFIG, credential helpers)
// as `docker login`, `crane auth login` or a CI's login action leave them.
// Loopback and *.local registries are spoken to over plain HTTP; insecure
// forces it for any registry.
func push(ctx context.Context, layoutDir string, insecure bool, log io.Writer) ([]string, error) {
	p, err := layout.FromPath(layoutDir)
	if err != nil {
		return nil, fmt.Errorf("read OCI layout %s (run `make images` first): %w", layoutDir, err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("read %s/index.json: %w", layoutDir, err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("read %s/index.json: %w", layoutDir, err)
	}
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	var pushed []string
	for _, desc := range im.Manifests {
		refName := desc.Annotations[refNameAnnotation]
		if refName == "" {
			return nil, fmt.Errorf("%s/index.json: entry %s has no %s annotation; rebuild with `make images`", layoutDir, desc.Digest, refNameAnnotation)
		}
		ref, err := name.ParseReference(refName, opts...)
		if err != nil {
			return nil, fmt.Errorf("%s/index.json: reference %q: %w", layoutDir, refName, err)
		}
		idx, err := top.ImageIndex(desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("read index %s: %w", desc.Digest, err)
		}
		if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return nil, fmt.Errorf("push %s: %w", ref, err)
		}
		fmt.Fprintf(log, "pushed %s@%s\n", ref, desc.Digest)
		pushed = append(pushed, ref.Context().Digest(desc.Digest.String()).String())
	}
	return pushed, nil
}

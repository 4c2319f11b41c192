// Command release builds glaceon's multi-platform OCI images with Go
// tooling alone (go-containerregistry: an empty base, one layer holding the
// static binary; no container engine, no base image pulled), pushes them,
// and renders the install manifest and chart values pinned by digest.
//
//	go run ./hack/release images  [flags]   # dist/oci: OCI image layout
//	go run ./hack/release push    [flags]   # dist/oci → the registry
//	go run ./hack/release install [flags]   # dist/install.yaml, dist/values.yaml
//	go run ./hack/release binaries [flags]  # host-platform binaries (make build)
//
// The Makefile's images, push, release and build targets call it; see
// docs/release.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/glaceon/glaceon/webhook/inject"
)

// Where the linker stamps version, commit and the sidecar repository.
const (
	versionPackage       = "github.com/glaceon/glaceon/flyapi/version"
	sidecarRepositoryVar = "github.com/glaceon/glaceon/webhook/inject.SidecarRepository"
	defaultRegistry      = "ghcr.io/glaceon"
	defaultSource        = "https://github.com/glaceon/glaceon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "release: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("usage: release images|push|install|binaries [flags] (see -h of each)")}
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	b := buildInfo{}
	var platforms, created, out, kubectl string
	var insecure bool
	fs.StringVar(&b.Root, "root", ".", "repository root")
	fs.StringVar(&out, "out", "dist", "output directory (images: <out>/oci)")
	fs.StringVar(&b.Registry, "registry", defaultRegistry, "registry and path the images are named under: <registry>/glaceon, <registry>/glaceon-sidecar")
	fs.StringVar(&b.Version, "version", "dev", "version stamped into binaries, labels and tags")
	fs.StringVar(&b.Commit, "commit", "", "commit stamped into binaries and labels (default: git rev-parse HEAD)")
	fs.StringVar(&b.Source, "source", defaultSource, "org.opencontainers.image.source")
	fs.StringVar(&created, "created", os.Getenv("SOURCE_DATE_EPOCH"), "image creation time in Unix seconds (default: $SOURCE_DATE_EPOCH, else the commit's time)")
	var defaults []string
	for _, p := range defaultPlatforms {
		defaults = append(defaults, platformString(p))
	}
	fs.StringVar(&platforms, "platforms", strings.Join(defaults, ","), "comma-separated platforms")
	fs.StringVar(&kubectl, "kubectl", "kubectl", "kubectl used to render deploy/ (install)")
	fs.BoolVar(&insecure, "insecure", false, "push over plain HTTP (loopback and *.local registries always are)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q", args[0], fs.Arg(0))}
	}
	var err error
	if b.Platforms, err = parsePlatforms(platforms); err != nil {
		return usageError{err}
	}
	switch args[0] {
	case "images":
		if err := b.complete(created); err != nil {
			return err
		}
	case "binaries":
		// A source tarball has no git: the binaries still build.
		if b.Commit == "" {
			b.Commit, _ = git(b.Root, "rev-parse", "HEAD")
		}
		if b.Commit == "" {
			b.Commit = "unknown"
		}
	}
	switch args[0] {
	case "images":
		built, err := buildImages(ctx, b, filepath.Join(out, "oci"), filepath.Join(out, "bin"))
		if err != nil {
			return err
		}
		return report(stdout, filepath.Join(out, "oci"), built)
	case "push":
		_, err := push(ctx, filepath.Join(out, "oci"), insecure, stdout)
		return err
	case "install":
		return writeRelease(b, kubectl, out, stdout)
	case "binaries":
		host := v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
		for _, spec := range shippedImages {
			if err := buildBinary(ctx, b, spec, host, filepath.Join(out, spec.Binary)); err != nil {
				return err
			}
		}
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q: images, push, install or binaries", args[0])}
}

// complete fills the commit and creation time from git when not given.
func (b *buildInfo) complete(created string) error {
	root, err := filepath.Abs(b.Root)
	if err != nil {
		return err
	}
	b.Root = root
	if b.Registry == "" || strings.HasSuffix(b.Registry, "/") {
		return usageError{fmt.Errorf("--registry %q: give a registry and path without a trailing slash, e.g. ghcr.io/glaceon", b.Registry)}
	}
	if b.Commit == "" {
		if b.Commit, err = git(root, "rev-parse", "HEAD"); err != nil {
			return fmt.Errorf("find the commit (or pass --commit): %w", err)
		}
	}
	if created == "" {
		if created, err = git(root, "log", "-1", "--format=%ct"); err != nil {
			return fmt.Errorf("find the commit time (or set SOURCE_DATE_EPOCH): %w", err)
		}
	}
	secs, err := strconv.ParseInt(created, 10, 64)
	if err != nil || secs < 0 {
		return usageError{fmt.Errorf("--created %q: want Unix seconds, e.g. $(git log -1 --format=%%ct)", created)}
	}
	b.Created = time.Unix(secs, 0).UTC()
	return nil
}

func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

func parsePlatforms(s string) ([]v1.Platform, error) {
	var ps []v1.Platform
	for _, f := range strings.Split(s, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(f))
		if err != nil || p.OS != "linux" || p.Architecture == "" {
			return nil, fmt.Errorf("--platforms: %q is not os/arch[/variant] for linux, e.g. linux/arm64/v8", f)
		}
		ps = append(ps, *p)
	}
	return ps, nil
}

// readLayout returns the images of an OCI layout written by buildImages.
func readLayout(layoutDir string) ([]builtImage, error) {
	p, err := layout.FromPath(layoutDir)
	if err != nil {
		return nil, fmt.Errorf("read OCI layout %s (run `make images` first): %w", layoutDir, err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := top.IndexManifest()
	if err != nil {
		return nil, err
	}
	var built []builtImage
	for _, spec := range shippedImages {
		found := false
		for _, d := range im.Manifests {
			if d.Annotations[imageNameAnnotation] != spec.Name {
				continue
			}
			idx, err := top.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			built = append(built, builtImage{Spec: spec, Ref: d.Annotations[refNameAnnotation], Digest: d.Digest, Index: idx})
			found = true
		}
		if !found {
			return nil, fmt.Errorf("OCI layout %s has no %s image; run `make images`", layoutDir, spec.Name)
		}
	}
	return built, nil
}

// writeRelease renders dist/install.yaml and dist/values.yaml from the
// images in dist/oci, for the registry and version they were built with.
func writeRelease(b buildInfo, kubectl, out string, stdout io.Writer) error {
	built, err := readLayout(filepath.Join(out, "oci"))
	if err != nil {
		return err
	}
	// The layout is the truth: registry, version and commit come from it,
	// so install.yaml always names what was built.
	cfg, err := builtInfo(built[0])
	if err != nil {
		return err
	}
	b.Registry, b.Version, b.Commit = cfg.Registry, cfg.Version, cfg.Commit
	if b.Root, err = filepath.Abs(b.Root); err != nil {
		return err
	}
	install, err := renderInstall(b, kubectl, built)
	if err != nil {
		return err
	}
	values, err := renderValues(b, built)
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"install.yaml": install, "values.yaml": values} {
		if err := os.WriteFile(filepath.Join(out, name), data, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "wrote %s and %s\n", filepath.Join(out, "install.yaml"), filepath.Join(out, "values.yaml"))
	return nil
}

// builtInfo recovers registry, version and commit from a built image.
func builtInfo(bi builtImage) (buildInfo, error) {
	im, err := bi.Index.IndexManifest()
	if err != nil {
		return buildInfo{}, err
	}
	repo := strings.TrimSuffix(bi.Ref, ":"+inject.ImageTag(im.Annotations["org.opencontainers.image.version"]))
	reg := strings.TrimSuffix(repo, "/"+bi.Spec.Name)
	if reg == repo || reg == "" {
		return buildInfo{}, fmt.Errorf("image reference %q does not end in /%s:<version>; rebuild with `make images`", bi.Ref, bi.Spec.Name)
	}
	return buildInfo{
		Registry: reg,
		Version:  im.Annotations["org.opencontainers.image.version"],
		Commit:   im.Annotations["org.opencontainers.image.revision"],
	}, nil
}

// report prints each index with its digest and per-platform sizes.
func report(w io.Writer, layoutDir string, built []builtImage) error {
	for _, bi := range built {
		fmt.Fprintf(w, "%s@%s\n", bi.Ref, bi.Digest)
		im, err := bi.Index.IndexManifest()
		if err != nil {
			return err
		}
		for _, d := range im.Manifests {
			img, err := bi.Index.Image(d.Digest)
			if err != nil {
				return err
			}
			var size int64
			layers, err := img.Layers()
			if err != nil {
				return err
			}
			for _, l := range layers {
				s, err := l.Size()
				if err != nil {
					return err
				}
				size += s
			}
			fmt.Fprintf(w, "  %-16s %s  %.1f MiB compressed\n", platformString(*d.Platform), d.Digest, float64(size)/(1<<20))
		}
	}
	fmt.Fprintf(w, "OCI image layout: %s\n", layoutDir)
	return nil
}

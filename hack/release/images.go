package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"

	"github.com/glaceon/glaceon/webhook/inject"
)

// Identity every image runs as: distroless's "nonroot", which the manager
// Deployment and the injected sidecar also set.
const (
	nonRootUID = 65532
	// caBundlePath is where Go's crypto/x509 looks first on Linux.
	caBundlePath = "etc/ssl/certs/ca-certificates.crt"
	// Annotation on index.json entries: the reference an index is pushed to.
	refNameAnnotation = "org.opencontainers.image.ref.name"
	// Annotation on index.json entries: the image's short name (glaceon, …).
	imageNameAnnotation = "dev.glaceon.image.name"
)

// imageSpec is one image glaceon ships.
type imageSpec struct {
	Name        string   // repository name under the registry
	Package     string   // Go main package
	Binary      string   // file name in the image (at /)
	Cmd         []string // default arguments after the entrypoint
	Description string
	// CABundle adds the Mozilla root store: the manager calls api.fly.io
	// over TLS; the sidecar speaks WireGuard only.
	CABundle bool
}

// shippedImages are the images of a release, in push order.
var shippedImages = []imageSpec{
	{
		Name: "glaceon", Package: "./cmd/glaceon", Binary: "glaceon", Cmd: []string{"manager"},
		Description: "glaceon manager (admission webhook and controllers) and CLI",
		CABundle:    true,
	},
	{
		Name: "glaceon-sidecar", Package: "./cmd/glaceon-sidecar", Binary: "glaceon-sidecar",
		Description: "glaceon userspace WireGuard sidecar: private Fly.io apps on the pod's loopback",
	},
}

// sidecarImage returns the spec of the sidecar image.
func sidecarImage() imageSpec { return shippedImages[1] }

// defaultPlatforms are the platforms of a release: amd64 servers and arm64
// boards (k3s at home) and servers.
var defaultPlatforms = []v1.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64", Variant: "v8"},
}

// buildInfo is what a release is built from. Equal buildInfos on the same
// commit and Go toolchain give byte-identical images.
type buildInfo struct {
	Root      string // repository root (holds go.mod)
	Registry  string // e.g. ghcr.io/glaceon; images are Registry/<name>
	Version   string
	Commit    string
	Source    string    // org.opencontainers.image.source
	Created   time.Time // the commit's time: images carry no build clock
	Platforms []v1.Platform
}

// ref returns the tag an image is pushed to.
func (b buildInfo) ref(name string) string {
	return b.Registry + "/" + name + ":" + inject.ImageTag(b.Version)
}

// repo returns an image's repository.
func (b buildInfo) repo(name string) string { return b.Registry + "/" + name }

// ldflags stamps version, commit and the sidecar repository into the binaries.
func (b buildInfo) ldflags() string {
	return strings.Join([]string{
		"-s", "-w",
		"-X", versionPackage + ".Version=" + b.Version,
		"-X", versionPackage + ".Commit=" + b.Commit,
		"-X", sidecarRepositoryVar + "=" + b.repo(sidecarImage().Name),
	}, " ")
}

// platformString is "linux/arm64/v8" style.
func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// buildBinary cross-compiles one static binary. The environment is pinned
// so that the user's GOFLAGS, GOAMD64 or CGO setting cannot change a digest.
func buildBinary(ctx context.Context, b buildInfo, spec imageSpec, p v1.Platform, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", b.ldflags(), "-o", out, spec.Package)
	cmd.Dir = b.Root
	cmd.Env = append(os.Environ(),
		"CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture,
		"GOFLAGS=", "GOAMD64=v1", "GOARM64=v8.0", "GOEXPERIMENT=",
	)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", spec.Package, platformString(p), err, stderr.String())
	}
	return nil
}

// caBundle is the Mozilla root store as served by golang.org/x/crypto's
// x509roots/fallback module, pinned by go.sum: the same bytes on every
// machine, unlike the build host's /etc/ssl/certs. Roots that NSS trusts
// only with a distrust-after date are left out, since a PEM bundle cannot
// carry that constraint.
func caBundle() []byte {
	var buf bytes.Buffer
	for root := range bundle.Roots() {
		if root.Constraint != nil {
			continue
		}
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate})
	}
	return buf.Bytes()
}

// layerFile is one regular file of an image's only layer.
type layerFile struct {
	Path string // without leading slash
	Mode int64
	Data []byte
}

// passwd and group name the non-root user, so tools that resolve user names
// (and people reading `ls -n` output of a copied filesystem) see "nonroot".
var (
	passwdFile = fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonRootUID, nonRootUID)
	groupFile  = fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonRootUID)
)

// layerTar writes files (and their parent directories) as a tar stream with
// fixed owners, modes and times, sorted by path: the same input gives the
// same bytes.
func layerTar(files []layerFile, mtime time.Time) ([]byte, error) {
	dirs := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(f.Path); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	type entry struct {
		hdr  *tar.Header
		data []byte
	}
	var entries []entry
	for d := range dirs {
		entries = append(entries, entry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}})
	}
	for _, f := range files {
		entries = append(entries, entry{hdr: &tar.Header{Typeflag: tar.TypeReg, Name: f.Path, Mode: f.Mode, Size: int64(len(f.Data))}, data: f.Data})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].hdr.Name < entries[j].hdr.Name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		e.hdr.ModTime = mtime.UTC().Truncate(time.Second)
		e.hdr.Uid, e.hdr.Gid = 0, 0
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(e.hdr); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.hdr.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	return buf.Bytes(), nil
}

// gzipBytes compresses with the standard library and an empty gzip header
// (no name, no time): deterministic for a given Go release.
func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// labels are the OCI labels (image config) and annotations (manifest, index).
func (b buildInfo) labels(spec imageSpec) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       spec.Name,
		"org.opencontainers.image.description": spec.Description,
		"org.opencontainers.image.source":      b.Source,
		"org.opencontainers.image.url":         b.Source,
		"org.opencontainers.image.version":     b.Version,
		"org.opencontainers.image.revision":    b.Commit,
		"org.opencontainers.image.created":     b.Created.UTC().Format(time.RFC3339),
	}
}

// buildImage assembles one platform's image from its static binary: an
// empty base, one layer, no shell.
func buildImage(b buildInfo, spec imageSpec, p v1.Platform, binary []byte) (v1.Image, error) {
	files := []layerFile{
		{Path: spec.Binary, Mode: 0o555, Data: binary},
		{Path: "etc/passwd", Mode: 0o444, Data: []byte(passwdFile)},
		{Path: "etc/group", Mode: 0o444, Data: []byte(groupFile)},
	}
	if spec.CABundle {
		files = append(files, layerFile{Path: caBundlePath, Mode: 0o444, Data: caBundle()})
	}
	raw, err := layerTar(files, b.Created)
	if err != nil {
		return nil, err
	}
	gz, err := gzipBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("gzip layer of %s: %w", spec.Name, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer of %s: %w", spec.Name, err)
	}
	created := v1.Time{Time: b.Created.UTC()}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   created,
			CreatedBy: "glaceon hack/release: static " + spec.Binary + " for " + platformString(p),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer of %s: %w", spec.Name, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = created
	cf.Author = ""
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", nonRootUID, nonRootUID),
		Entrypoint: []string{"/" + spec.Binary},
		Cmd:        spec.Cmd,
		WorkingDir: "/",
		Labels:     b.labels(spec),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("config of %s: %w", spec.Name, err)
	}
	return mutate.Annotations(img, b.labels(spec)).(v1.Image), nil
}

// buildIndex builds spec's binaries for every platform (in dir) and returns
// the multi-platform index.
func buildIndex(ctx context.Context, b buildInfo, spec imageSpec, dir string) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range b.Platforms {
		out := filepath.Join(dir, p.OS+"-"+p.Architecture, spec.Binary)
		if err := buildBinary(ctx, b, spec, p, out); err != nil {
			return nil, err
		}
		bin, err := os.ReadFile(out)
		if err != nil {
			return nil, err
		}
		img, err := buildImage(b, spec, p, bin)
		if err != nil {
			return nil, err
		}
		p := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	return mutate.Annotations(idx, b.labels(spec)).(v1.ImageIndex), nil
}

// builtImage is one image index of a release and where it goes.
type builtImage struct {
	Spec   imageSpec
	Ref    string  // tag reference
	Digest v1.Hash // of the index
	Index  v1.ImageIndex
}

// Pinned is the digest reference of the image: repository@sha256:….
func (bi builtImage) Pinned(b buildInfo) string {
	return b.repo(bi.Spec.Name) + "@" + bi.Digest.String()
}

// buildImages builds every shipped image and writes them as an OCI image
// layout in layoutDir (replaced as a whole, so no blob of an earlier build
// stays behind). Binaries are built under binDir.
func buildImages(ctx context.Context, b buildInfo, layoutDir, binDir string) ([]builtImage, error) {
	var built []builtImage
	top := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, spec := range shippedImages {
		idx, err := buildIndex(ctx, b, spec, binDir)
		if err != nil {
			return nil, err
		}
		d, err := idx.Digest()
		if err != nil {
			return nil, err
		}
		ref := b.ref(spec.Name)
		built = append(built, builtImage{Spec: spec, Ref: ref, Digest: d, Index: idx})
		top = mutate.AppendManifests(top, mutate.IndexAddendum{
			Add: idx,
			Descriptor: v1.Descriptor{Annotations: map[string]string{
				refNameAnnotation:   ref,
				imageNameAnnotation: spec.Name,
			}},
		})
	}
	if err := os.RemoveAll(layoutDir); err != nil {
		return nil, err
	}
	if _, err := layout.Write(layoutDir, top); err != nil {
		return nil, fmt.Errorf("write OCI layout %s: %w", layoutDir, err)
	}
	return built, nil
}

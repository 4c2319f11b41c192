#!/usr/bin/env bash
# Builds the local control plane used by envtest, the e2e tests and the demo:
# kube-apiserver, kube-controller-manager and kubectl from k8s.io/kubernetes,
# and etcd from go.etcd.io/etcd/server/v3, all through the Go module proxy
# (no download site is reachable on our machines, and there is no kind).
#
# The binaries go into a versioned cache outside the clone, so fresh clones
# and CI reuse them; a second run is a no-op. The last line printed on stdout
# is the directory (use it as KUBEBUILDER_ASSETS).
#
#   GLACEON_K8S_ASSETS   override the cache directory
#   K8S_VERSION          default 1.37.2
#   ETCD_VERSION         default 3.6.16
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
ASSETS=${GLACEON_K8S_ASSETS:-${XDG_CACHE_HOME:-$HOME/.cache}/glaceon/k8s/${K8S_VERSION}}
BINARIES=(kube-apiserver kube-controller-manager kubectl etcd)

log() { printf '[control-plane] %s\n' "$*" >&2; }

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$ASSETS/$b" ]] || return 1; done
  [[ -f "$ASSETS/.complete-$K8S_VERSION-$ETCD_VERSION" ]]
}

if have_all; then
  log "cached in $ASSETS"
  echo "$ASSETS"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
mkdir -p "$ASSETS"
# Two test runs on a fresh machine (a developer and CI, or parallel worktrees)
# must not both spend ten minutes building the same binaries.
if command -v flock >/dev/null; then
  exec 9>"$ASSETS/.lock"
  if ! flock -n 9; then
    log "another build holds $ASSETS/.lock; waiting for it"
    flock 9
  fi
  if have_all; then
    log "cached in $ASSETS"
    echo "$ASSETS"
    exit 0
  fi
fi
work=$(mktemp -d "$ASSETS/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start ))s"; }

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}
minor=${K8S_VERSION#*.}; minor=${minor%%.*}
patch=${K8S_VERSION##*.}
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=v${K8S_VERSION} \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=${minor} \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=v${K8S_VERSION} \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=${minor}"

# --- kube-apiserver, kube-controller-manager, kubectl ---------------------
if [[ ! -x "$ASSETS/kube-apiserver" || ! -x "$ASSETS/kube-controller-manager" || ! -x "$ASSETS/kubectl" ]]; then
  k8s="$work/k8s"
  mkdir -p "$k8s/kube-apiserver" "$k8s/kube-controller-manager" "$k8s/kubectl"
  log "resolving k8s.io/kubernetes v${K8S_VERSION} through the module proxy ($(elapsed))"
  gomod=$(cd "$k8s" && go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$gomod" ]] || { log "could not download the go.mod of k8s.io/kubernetes v${K8S_VERSION}"; exit 1; }
  {
    echo "module glaceon.local/controlplane"
    echo
    echo "go $(sed -n 's/^go //p' "$gomod")"
    echo
    echo "require k8s.io/kubernetes v${K8S_VERSION}"
    echo
    echo "replace ("
    # k8s.io/kubernetes replaces every staging module with ./staging/...;
    # a module that depends on it must point them at the published v0.<minor>.<patch>.
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 v0.'"${minor}.${patch}"'#p' "$gomod"
    echo ")"
  } >"$k8s/go.mod"
  cat >"$k8s/kube-apiserver/main.go" <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
  cat >"$k8s/kube-controller-manager/main.go" <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() { os.Exit(cli.Run(app.NewControllerManagerCommand())) }
GO
  cat >"$k8s/kubectl/main.go" <<'GO'
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
GO
  log "resolving dependencies (first run only) ($(elapsed))"
  (cd "$k8s" && go mod tidy >&2)
  for b in kube-apiserver kube-controller-manager kubectl; do
    [[ -x "$ASSETS/$b" ]] && continue
    log "building $b v${K8S_VERSION}: takes several minutes on 2 cores the first time ($(elapsed))"
    (cd "$k8s" && go build -trimpath -ldflags "$ldflags" -o "$ASSETS/$b.tmp" "./$b" >&2)
    mv "$ASSETS/$b.tmp" "$ASSETS/$b"
    log "built $b ($(elapsed))"
  done
fi

# --- etcd -------------------------------------------------------------------
if [[ ! -x "$ASSETS/etcd" ]]; then
  e="$work/etcd"
  mkdir -p "$e"
  cat >"$e/go.mod" <<GO
module glaceon.local/etcd

go 1.24

require go.etcd.io/etcd/server/v3 v${ETCD_VERSION}
GO
  cat >"$e/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "building etcd v${ETCD_VERSION} ($(elapsed))"
  (cd "$e" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$ASSETS/etcd.tmp" . >&2)
  mv "$ASSETS/etcd.tmp" "$ASSETS/etcd"
  log "built etcd ($(elapsed))"
fi

touch "$ASSETS/.complete-$K8S_VERSION-$ETCD_VERSION"
log "control plane ready in $ASSETS ($(elapsed))"
echo "$ASSETS"

#!/usr/bin/env bash
# Installs a pinned Go tool into a versioned cache outside the clone and
# prints its path, so fresh clones and CI reuse it.
#   hack/tool.sh controller-gen | staticcheck | helm
set -euo pipefail
ldflags=
case "${1:-}" in
  controller-gen) pkg=sigs.k8s.io/controller-tools/cmd/controller-gen; version=v0.23.0 ;;
  staticcheck)    pkg=honnef.co/go/tools/cmd/staticcheck;            version=v0.8.2 ;;
  helm)
    # helm's own Makefile stamps its version and the Kubernetes version it
    # renders and lints for (its client-go minor: v0.37 -> 1.37).
    pkg=helm.sh/helm/v3/cmd/helm; version=v3.22.0
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
      ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=37"
    done ;;
  *) echo "usage: hack/tool.sh controller-gen|staticcheck|helm" >&2; exit 2 ;;
esac
dir=${GLACEON_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/glaceon/tools}/$1-$version
if [[ ! -x "$dir/$1" ]]; then
  echo "[tools] installing $1 $version into $dir" >&2
  mkdir -p "$dir"
  # Into a temporary name first: a build cut short never looks installed.
  tmp=$(mktemp -d "$dir/.install.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" GOFLAGS= CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "$pkg@$version" >&2
  mv "$tmp/$1" "$dir/$1"
fi
echo "$dir/$1"

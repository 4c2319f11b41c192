#!/usr/bin/env bash
# Installs a pinned Go tool into a versioned cache outside the clone and
# prints its path, so fresh clones and CI reuse it.
#   hack/tool.sh controller-gen | staticcheck
set -euo pipefail
case "${1:-}" in
  controller-gen) pkg=sigs.k8s.io/controller-tools/cmd/controller-gen; version=v0.23.0 ;;
  staticcheck)    pkg=honnef.co/go/tools/cmd/staticcheck;            version=v0.8.2 ;;
  *) echo "usage: hack/tool.sh controller-gen|staticcheck" >&2; exit 2 ;;
esac
dir=${GLACEON_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/glaceon/tools}/$1-$version
if [[ ! -x "$dir/$1" ]]; then
  echo "[tools] installing $1 $version into $dir" >&2
  mkdir -p "$dir"
  GOBIN="$dir" GOFLAGS= go install "$pkg@$version" >&2
fi
echo "$dir/$1"

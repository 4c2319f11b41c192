#!/usr/bin/env bash
# make demo: glaceon end to end on this machine (see hack/demo/main.go).
# The first run builds the control plane from the Go module proxy (minutes);
# later runs reuse the cache.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> Preparing the control plane (cached after the first run)"
assets=$(hack/control-plane.sh)
bin=$(mktemp -d "${TMPDIR:-/tmp}/glaceon-demo-bin.XXXXXX")
trap 'rm -rf "$bin"' EXIT
echo "==> Building glaceon and glaceon-sidecar"
go build -o "$bin/" ./cmd/glaceon ./cmd/glaceon-sidecar
go build -o "$bin/demo" ./hack/demo
KUBEBUILDER_ASSETS="$assets" "$bin/demo" -glaceon "$bin/glaceon" -sidecar "$bin/glaceon-sidecar"

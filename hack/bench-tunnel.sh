#!/usr/bin/env bash
# Benchmarks the glaceon sidecar end to end on loopback (see docs/benchmarks.md):
# builds the real sidecar binary, then runs hack/bench-tunnel, which starts the
# Fly double in-process, runs the sidecar as a separate process, downloads
# SIZE through it and over plain loopback TCP, samples the sidecar's VmHWM and
# utime+stime from /proc, and compares small-request latency.
#
# The same measurements are then taken of hack/bench-tunnel/vanilla, a forwarder
# built on untuned wireguard-go tun/netstack (BENCH_NO_BASELINE=1 skips it).
#
#   hack/bench-tunnel.sh [-size 1GiB] [-upload 256MiB] [-requests 2000] [-json out.json] [-env GOMEMLIMIT=32MiB]
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# The proxies are built the way hack/release builds the images (static, no
# cgo, no symbol tables), so that the resident set measured is the shipped
# binary's: a cgo build maps libc and the dynamic loader too (~1.5 MiB).
build_proxy() { CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' "$@"; }
build_proxy -o "$out/glaceon-sidecar" ./cmd/glaceon-sidecar
go build -trimpath -o "$out/bench-tunnel" ./hack/bench-tunnel
build_proxy -o "$out/vanilla" ./hack/bench-tunnel/vanilla
echo "# $(date -u +%FT%TZ) $(uname -sr) $(nproc) CPUs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
baseline=(-baseline "$out/vanilla")
if [[ "${BENCH_NO_BASELINE:-}" == 1 ]]; then baseline=(); fi
"$out/bench-tunnel" -sidecar "$out/glaceon-sidecar" "${baseline[@]}" "$@"

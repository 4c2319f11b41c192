#!/usr/bin/env bash
# The tunnel across emulated WAN paths (see docs/benchmarks.md, "WAN matrix"):
# glaceon-sidecar and the stock wireguard-go forwarder side by side, through
# a userspace link emulator (a UDP relay; for WireGuard over WebSocket, the
# IP packets of its TCP between two TUN devices), to a wireguard-go gateway
# on a real TUN device whose interface lives in a network namespace made
# here, with Linux TCP behind it. Needs root (namespace, TUN,
# SO_RCVBUFFORCE) and iproute2.
#
#   hack/bench-wan.sh [-quick] [-json out.json] [-svg docs/bench-wan.svg] [-duration 5s] [-rate 200]
#                     [-transports udp,websocket]   # the sidecar over each (default both; the stock
#                                                   # forwarder runs over UDP only)
#                     [-ws-path packet|stream]      # the WebSocket's TCP as IP packets on the link
#                                                   # (default, lossy cells too) or through a byte-
#                                                   # stream relay (no loss: lossy cells left out)
#   QUICK=1 hack/bench-wan.sh          # the same as -quick
#   BENCH_SIDECAR=/path/to/glaceon-sidecar hack/bench-wan.sh ...   # A/B a build of a local change
#   BENCH_BEFORE=main hack/bench-wan.sh ...   # also measure the sidecar of a git ref (or a binary's path)
#                                             # in every cell: before/after ratios from one run
#
# Everything it makes — the namespace glaceon-wan-<pid>, the TUN interfaces
# glwan<pid> (the gateway's) and glwan<pid>n, glwan<pid>f (the packet path's,
# owned by the emulator process), the proxies it starts — is removed on exit,
# whatever the exit;
# a leftover of an earlier run that died harder (SIGKILL) is removed first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
  echo "bench-wan: needs root (network namespace, TUN device); run it as root" >&2
  exit 2
fi
command -v ip >/dev/null || { echo "bench-wan: needs iproute2 (ip)" >&2; exit 2; }

ns="glaceon-wan-$$"
dev="glwan$$"
out="$(mktemp -d)"
harness_pid=""

cleanup() {
  # Idempotent: every step tolerates what is already gone.
  if [[ -n "$harness_pid" ]] && kill -0 "$harness_pid" 2>/dev/null; then
    kill "$harness_pid" 2>/dev/null || true
    wait "$harness_pid" 2>/dev/null || true
  fi
  ip -n "$ns" link del "$dev" 2>/dev/null || true
  ip link del "$dev" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Leftovers of runs whose script is no longer alive.
for old in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^glaceon-wan-' || true); do
  pid="${old#glaceon-wan-}"
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "bench-wan: removing leftover namespace $old of a dead run" >&2
    ip netns del "$old" || true
  fi
done
for old in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep '^glwan[0-9]' || true); do
  pid="${old#glwan}"
  pid="${pid%%[!0-9]*}" # the packet path's glwan<pid>n
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "bench-wan: removing leftover interface $old of a dead run" >&2
    ip link del "$old" || true
  fi
done

args=("$@")
if [[ "${QUICK:-}" == 1 ]]; then args=(-quick "${args[@]}"); fi

# The proxies are built the way hack/release builds the images (static, no
# cgo, no symbol tables), so that the resident set measured is the shipped
# binary's: a cgo build maps libc and the dynamic loader too (~1.5 MiB).
build_proxy() { CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' "$@"; }
if [[ -n "${BENCH_SIDECAR:-}" ]]; then
  cp "$BENCH_SIDECAR" "$out/glaceon-sidecar"
else
  build_proxy -o "$out/glaceon-sidecar" ./cmd/glaceon-sidecar
fi
before=()
if [[ -n "${BENCH_BEFORE:-}" ]]; then
  if [[ -f "$BENCH_BEFORE" ]]; then
    cp "$BENCH_BEFORE" "$out/sidecar-before"
  else
    mkdir "$out/before-src"
    git archive "$BENCH_BEFORE" | tar -x -C "$out/before-src"
    (cd "$out/before-src" && build_proxy -o "$out/sidecar-before" ./cmd/glaceon-sidecar)
  fi
  before=(-before "$out/sidecar-before")
fi
build_proxy -o "$out/vanilla" ./hack/bench-tunnel/vanilla
go build -trimpath -o "$out/bench-wan" ./hack/bench-wan
ip netns add "$ns"
echo "# $(date -u +%FT%TZ) $(uname -sr) $(nproc) CPUs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$out/bench-wan" -sidecar "$out/glaceon-sidecar" -baseline "$out/vanilla" -netns "$ns" -ifname "$dev" -workdir "$out" "${before[@]}" "${args[@]}" &
harness_pid=$!
wait "$harness_pid"

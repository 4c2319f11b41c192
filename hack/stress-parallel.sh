#!/usr/bin/env bash
# Stress: TestE2EParallelDownloads (100 parallel 4 MiB downloads through one
# sidecar) run N times while busy loops compete for the CPU. Counts passes,
# stalls ("downloads stalled") and other failures, and prints each run's time.
# See docs/stall.md for what it reproduces.
#
#   hack/stress-parallel.sh                 # 50 runs, 2 busy loops
#   hack/stress-parallel.sh -runs 10 -hogs 3 -keep /tmp/stress-logs
#
# Bounded: every run is cut after -run-timeout, the whole script after
# -deadline, and the busy loops are killed on exit (they also carry their own
# `timeout`, so they die even if this script is killed with SIGKILL).
set -euo pipefail

runs=50
hogs=2
run_timeout=150     # seconds; the test's own budget is 90 s
deadline=5400       # seconds for the whole script
keep=""
extra=()
while [ $# -gt 0 ]; do
	case "$1" in
	-runs) runs=$2; shift 2 ;;
	-hogs) hogs=$2; shift 2 ;;
	-run-timeout) run_timeout=$2; shift 2 ;;
	-deadline) deadline=$2; shift 2 ;;
	-keep) keep=$2; shift 2 ;;
	--) shift; extra=("$@"); break ;;
	-h|--help) sed -n '2,12p' "$0"; exit 0 ;;
	*) echo "stress-parallel: unknown flag $1 (see -h)" >&2; exit 2 ;;
	esac
done
for v in "$runs" "$hogs" "$run_timeout" "$deadline"; do
	case "$v" in ''|*[!0-9]*) echo "stress-parallel: flags take whole numbers, got '$v'" >&2; exit 2 ;; esac
done

cd "$(dirname "$0")/.."
work=$(mktemp -d)
hog_pids=()
test_pid=""
cleanup() {
	[ -n "$test_pid" ] && kill "$test_pid" 2>/dev/null || true
	for p in "${hog_pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "stress-parallel: building the sidecar test binary" >&2
go test -c -o "$work/sidecar.test" ./sidecar
[ -n "$keep" ] && mkdir -p "$keep"

for ((i = 0; i < hogs; i++)); do
	timeout "$deadline" sh -c 'while :; do :; done' &
	hog_pids+=($!)
done

# System-wide UDP receive-buffer drops (this network namespace): the tunnel's
# datagrams are lost here when a receiver falls behind.
rcvbuf_errors() { awk '/^Udp:/ { if (++n == 2) print $6 }' /proc/net/snmp; }

start=$(date +%s)
pass=0 stall=0 fail=0 times=()
for ((i = 1; i <= runs; i++)); do
	if (($(date +%s) - start > deadline)); then
		echo "stress-parallel: deadline of ${deadline}s reached after $((i - 1)) runs" >&2
		break
	fi
	log="$work/run-$i.log"
	t0=$(date +%s.%N)
	drops0=$(rcvbuf_errors)
	rc=0
	(cd sidecar && exec timeout "$run_timeout" "$work/sidecar.test" -test.count=1 \
		-test.run 'TestE2EParallelDownloads$' "${extra[@]}") >"$log" 2>&1 &
	test_pid=$!
	wait "$test_pid" || rc=$?
	test_pid=""
	dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	drops=$(($(rcvbuf_errors) - drops0))
	times+=("$dt")
	if [ "$rc" = 0 ]; then
		pass=$((pass + 1)) r=ok
	elif grep -q 'downloads stalled' "$log" || [ "$rc" = 124 ]; then
		stall=$((stall + 1)) r=STALL
	else
		fail=$((fail + 1)) r=FAIL
	fi
	echo "run $i: $r ${dt}s udp-rcvbuf-drops=$drops $(grep -o 'downloads stalled: \[[^]]*\]' "$log" || true)"
	if [ "$r" != ok ] && [ -n "$keep" ]; then cp "$log" "$keep/run-$i.log"; fi
done
echo "stress-parallel: $((pass + stall + fail)) runs with $hogs busy loops: $pass ok, $stall stalled, $fail failed; times: ${times[*]}"
[ $((stall + fail)) = 0 ]

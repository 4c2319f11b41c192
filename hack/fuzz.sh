#!/usr/bin/env bash
# Runs every fuzz target in the module for a while each (default 20s).
# `go test` already runs each target's seed corpus; this explores further.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-20s}
grep -rl --include='*_test.go' '^func Fuzz' . | while read -r file; do
  pkg="./$(dirname "${file#./}")"
  for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
    echo "[fuzz] $pkg $target for $fuzztime"
    go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime"
  done
done

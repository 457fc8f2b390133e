#!/usr/bin/env bash
# Checks the bench harness itself, without the real built-in guest: builds azote-bench and its
# stand-in PVH guest, runs the boot and memory scenarios a few times with QEMU microvm (and with
# azote-hv if BUILD_DIR/bin/azote-hv exists), and checks that QEMU's runs were measured.
# Results go to a temporary directory, never to bench/results.
#
#   bench/selftest.sh [BUILD_DIR]
# Exit: 0 ok, 1 harness failure, 2 cannot run here (no QEMU or no /dev/kvm).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
mkdir -p "$build"
build=$(cd "$build" && pwd)

command -v qemu-system-x86_64 >/dev/null || { echo "selftest: SKIPPED: no qemu-system-x86_64" >&2; exit 2; }
[[ -r /dev/kvm && -w /dev/kvm ]] || { echo "selftest: SKIPPED: no access to /dev/kvm" >&2; exit 2; }

cmake -S "$repo/bench/runner" -B "$build/bench-runner" -G Ninja >/dev/null
cmake --build "$build/bench-runner" >&2
bin=$build/bench-runner/bin
out=$(mktemp -d)
trap 'rm -rf -- "$out"' EXIT

# Both VMMs boot the same stand-in guest here (builtin:hello may not exist yet).
"$bin/azote-bench" --build "$build" --guest "$bin/azote-bench-testguest.elf" \
  --hv-kernel "$bin/azote-bench-testguest.elf" --out "$out" \
  --only boot,memory --runs 3 --mem-runs 1 >"$out/summary.txt"

fail=0
check() {  # FILE PEER: that peer was measured
  if ! grep -q "\"status\": \"ok\"" <(sed -n "/\"$2\": {/,/\"samples\"/p" "$out/$1"); then
    echo "selftest: $1: peer $2 not measured" >&2
    sed -n "/\"$2\": {/,/\"samples\"/p" "$out/$1" | grep -E '"(status|reason)"' >&2 || true
    fail=1
  fi
}
check boot.json qemu
check memory.json qemu
if [[ -x $build/bin/azote-hv ]]; then
  check boot.json azote-hv
  check memory.json azote-hv
fi
cat "$out/summary.txt"
[[ $fail == 0 ]] && echo "selftest: ok" >&2
exit $fail

#!/usr/bin/env bash
# Runs every azote benchmark against QEMU microvm on this machine and writes
# bench/results/{boot,memory,linux-banner,cpu}.json and bench/results/summary.md.
#
#   bench/run.sh BUILD_DIR [azote-bench options]     e.g. bench/run.sh build --runs 20
#
# Missing pieces (azote-hv, the guest ELF, QEMU, the Debian kernel) do not stop the run: the
# scenario records "skipped" with the reason, so the JSON says exactly what was measured.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
[[ $# -gt 0 ]] && shift
mkdir -p "$build"
build=$(cd "$build" && pwd)
log() { printf 'bench: %s\n' "$*" >&2; }

# 1. The runner: part of the main build when bench/CMakeLists.txt includes runner/, otherwise
#    built on its own next to it.
runner=$build/bin/azote-bench
if [[ -f $build/build.ninja ]] && ninja -C "$build" -t targets all 2>/dev/null | grep -q '^azote-bench:'; then
  cmake --build "$build" --target azote-bench azote-bench-testguest azote-kvm-floor >&2
else
  cmake -S "$repo/bench/runner" -B "$build/bench-runner" -G Ninja >/dev/null
  cmake --build "$build/bench-runner" >&2
  runner=$build/bench-runner/bin/azote-bench
fi

# 2. The Debian cloud kernel for the Linux time-to-banner scenario (exit 2 = not available here;
#    the scenario then records why it was skipped).
if ! "$repo/scripts/debian-kernel.sh" "$build/linux"; then
  log "no Debian kernel; the Linux scenario will be skipped"
fi

# 3. Snapshot the binaries under test, so a rebuild during the run cannot swap them mid-way and
#    every scenario measures the same bytes; their digests go into bench/results/binaries.txt.
snap=$build/bench-snapshot
rm -rf "$snap" && mkdir -p "$snap"
for f in azote-hv azote-guest.elf azote-cpu-host; do
  if [[ -f $build/bin/$f ]]; then
    cp -p "$build/bin/$f" "$snap/$f"
  fi
done
mkdir -p "$repo/bench/results"
if compgen -G "$snap/*" >/dev/null; then
  (cd "$snap" && sha256sum -- *) >"$repo/bench/results/binaries.txt"
else
  : >"$repo/bench/results/binaries.txt"
fi

read -r load1 _ </proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 1.0) }'; then
  log "warning: load average $load1 on $(nproc) CPUs; other work will distort the numbers"
fi

# 4. Run. Results go to the source tree so they can be committed with docs/benchmarks.md.
AZOTE_BENCH_REV=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo uncommitted)
export AZOTE_BENCH_REV
if ! git -C "$repo" diff --quiet HEAD 2>/dev/null; then
  AZOTE_BENCH_REV+="+dirty"
fi
"$runner" --build "$build" --hv "$snap/azote-hv" --guest "$snap/azote-guest.elf" \
  --cpu-host "$snap/azote-cpu-host" --out "$repo/bench/results" "$@"

# 5. The floor: what this host's KVM charges any VMM for a VM's life without running a guest,
#    with and without the in-kernel PIT and irqchip (see docs/benchmarks.md).
floor=$(dirname "$runner")/azote-kvm-floor
if [[ -x $floor && -w /dev/kvm ]]; then
  {
    echo '['
    "$floor" 15 128
    echo ','
    "$floor" 15 128 no-pit
    echo ','
    "$floor" 15 128 no-irqchip
    echo ']'
  } >"$repo/bench/results/kvm-floor.json"
  log "wrote bench/results/kvm-floor.json"
fi

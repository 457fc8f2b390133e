#!/usr/bin/env bash
# make demo: boot the built-in guest under azote-hv and show its console.
set -euo pipefail
build=${1:-build}
hv="$build/bin/azote-hv"
[[ -x "$hv" ]] || { echo "demo: $hv is missing; run 'make' first" >&2; exit 1; }
if [[ ! -r /dev/kvm || ! -w /dev/kvm ]]; then
  echo "demo: /dev/kvm is not usable by $(id -un); azote-hv needs KVM" >&2
  exit 1
fi

if [[ -t 1 ]]; then bold=$'\033[1m' dim=$'\033[2m' off=$'\033[0m'; else bold='' dim='' off=''; fi
step() {
  printf '\n%s$ %s%s\n' "$bold" "$*" "$off"
  local start end rc=0
  start=$(date +%s%N)
  "$@" || rc=$?
  end=$(date +%s%N)
  printf '%s(exit status %d, %d ms)%s\n' "$dim" "$rc" $(((end - start) / 1000000)) "$off"
  return 0
}

echo "azote demo: one azote-hv process per VM, the built-in guest on the console (COM1)."
step "$hv" --kernel builtin:hello --vcpus 2 --memory 128M
step "$hv" --kernel builtin:smp --vcpus 2 --memory 128M
step "$hv" --kernel builtin:cpu --cmdline 64 --memory 128M
step "$build/bin/azote-cpu-host" 64
step "$hv" --kernel builtin:exit --cmdline 7 --memory 64M
echo
echo "A fault is reported with the vCPU, RIP and instruction bytes (status 80 = triple fault):"
step "$hv" --kernel builtin:fault --cmdline triple --memory 64M --log /dev/null

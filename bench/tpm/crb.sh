#!/usr/bin/env bash
# The cost of a TPM command as the guest sees it: the built-in guest's tpm-pcrs (10
# commands: one GetCapability, nine PCR_Read) reports its mean time per command
# (TSC), under azote-hv --tpm and under QEMU's tpm-crb (q35, SeaBIOS), both with the
# same TPM behind them: Debian's swtpm. What differs is the transport: azote-hv traps
# the CRB registers and maps the command buffer as memory; QEMU traps the buffer too.
#
#   bench/tpm/crb.sh [BUILD_DIR] [RUNS]     prints one line per run and the medians
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
runs=${2:-5}
for t in swtpm qemu-system-x86_64; do command -v "$t" >/dev/null || { echo "SKIPPED: $t is not installed"; exit 0; }; done
work=$(mktemp -d /tmp/azote-bench-tpm.XXXXXX)
trap 'pkill -f "$work" 2>/dev/null || true; rm -rf "$work"' EXIT

us() { grep -o 'us_per_command=[0-9]*' | cut -d= -f2; }
one_azote() {
  rm -rf "$work/a" && mkdir -p "$work/a"
  swtpm socket --tpm2 --server "type=unixio,path=$work/a/sock" --tpmstate "dir=$work/a" --flags not-need-init 2>/dev/null &
  local p=$!
  for _ in $(seq 100); do [[ -S $work/a/sock ]] && break; sleep 0.02; done
  "$build/bin/azote-hv" --memory 128M --kernel builtin:tpm-pcrs --tpm "$work/a/sock" 2>/dev/null | us || true
  kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true
}
one_qemu() {
  rm -rf "$work/q" && mkdir -p "$work/q"
  swtpm socket --tpm2 --tpmstate "dir=$work/q" --ctrl "type=unixio,path=$work/q/sock" 2>/dev/null &
  local p=$!
  for _ in $(seq 100); do [[ -S $work/q/sock ]] && break; sleep 0.02; done
  timeout 120 qemu-system-x86_64 -M q35 -accel kvm -cpu host,-arch-capabilities -m 128M -smp 1 -nodefaults \
    -no-user-config -nographic -serial stdio -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x01 \
    -chardev "socket,id=chrtpm,path=$work/q/sock" -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0 \
    -kernel "$build/bin/azote-guest.elf" -append "azote.run=tpm-pcrs" 2>/dev/null | us || true
  kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
a=() q=()
for i in $(seq "$runs"); do
  x=$(one_azote); y=$(one_qemu)
  echo "run $i: azote-hv ${x} us/command, QEMU tpm-crb ${y} us/command"
  a+=("$x"); q+=("$y")
done
ma=$(printf '%s\n' "${a[@]}" | median); mq=$(printf '%s\n' "${q[@]}" | median)
echo "median: azote-hv $ma us/command, QEMU $mq us/command, ratio $(awk -v a="$ma" -v q="$mq" 'BEGIN {printf "%.2f", a / q}')"

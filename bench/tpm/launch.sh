#!/usr/bin/env bash
# What a TPM costs a launch: the controller's own launch time (its debug line "launched
# in X ms": shell, cards, channels, start; with a TPM also the TPM card's start and open
# and the measured boot) of the built-in guest's init program with and without
# --tpm-support v2.0 (the same kernel and command line otherwise), alternating, on one
# host (azote-controller as root, a temp state dir).
#
#   bench/tpm/launch.sh [BUILD_DIR] [RUNS]      prints each launch and the medians
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
runs=${2:-8}
state=$(mktemp -d /tmp/azote-bench-tpmlaunch.XXXXXX)
ctl=
cleanup() { [[ -n $ctl ]] && kill "$ctl" 2>/dev/null && wait "$ctl" 2>/dev/null; rm -rf "$state"; }
trap cleanup EXIT
"$build/bin/azote-controller" --state-dir "$state" --on-exit stop --log-level debug > "$state/out" 2> "$state/log" &
ctl=$!
for _ in $(seq 200); do grep -q ready "$state/out" 2>/dev/null && break; sleep 0.05; done
export AZOTE_ENDPOINT="unix:$state/api.sock" AZOTE_CREDENTIALS="$state/creds"
az="$build/bin/azote"
"$az" admin issue-cert --state-dir "$state" --role control-plane --name bench --out "$state/creds" >/dev/null
plain=$("$az" register-image --name plain --kernel "$build/bin/azote-guest.elf" --cmdline azote.run=init --output text)
tpm=$("$az" register-image --name tpm --kernel "$build/bin/azote-guest.elf" --cmdline azote.run=init --tpm-support v2.0 --output text)
one() {
  local id
  id=$("$az" run-instances --image-id "$1" --instance-type t3.nano --no-network-interface --wait --output text 2>/dev/null |
       awk '$1 == "INSTANCES" {print $2; exit}')
  "$az" terminate-instances --instance-ids "$id" --wait >/dev/null 2>&1
  grep -o "instance $id: launched in [0-9.]* ms" "$state/log" | awk '{print $5}'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
one "$plain" >/dev/null; one "$tpm" >/dev/null  # warm-up (first TPM manufacture excluded too)
p=() t=()
for i in $(seq "$runs"); do
  a=$(one "$plain"); b=$(one "$tpm")
  echo "run $i: without TPM ${a} ms, with TPM ${b} ms"
  p+=("$a"); t+=("$b")
done
mp=$(printf '%s\n' "${p[@]}" | median); mt=$(printf '%s\n' "${t[@]}" | median)
echo "median: without TPM $mp ms, with TPM $mt ms, ratio $(awk -v a="$mt" -v b="$mp" 'BEGIN {printf "%.2f", a / b}')"

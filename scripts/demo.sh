#!/usr/bin/env bash
# make demo: a local azote host — azote-controller (unprivileged, under its launcher) with the block
# and network cards, each process in a jail — under a temp
# state directory; run an instance of the built-in image through the azote CLI, wait
# for it, show it and its console, terminate it, shut the host down cleanly.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
for b in azote-controller azote azote-hv azote-card-blk azote-card-net azote-card-tpm azote-card-nsm azote-card-vsock; do
  [[ -x "$build/bin/$b" ]] || { echo "demo: $build/bin/$b is missing; run 'make' first" >&2; exit 1; }
done
if [[ ! -r /dev/kvm || ! -w /dev/kvm ]]; then
  echo "demo: /dev/kvm is not usable by $(id -un); azote-hv needs KVM" >&2
  exit 1
fi

if [[ -t 1 ]]; then bold=$'\033[1m' dim=$'\033[2m' off=$'\033[0m'; else bold='' dim='' off=''; fi
state=$(mktemp -d /tmp/azote-demo.XXXXXX)
ctl=
cleanup() {
  if [[ -n $ctl ]] && kill -0 "$ctl" 2>/dev/null; then
    kill "$ctl"
    wait "$ctl" 2>/dev/null || true
  fi
  rm -rf "$state"
}
trap cleanup EXIT
step() {  # prints the command as a user would type it, runs it, times it
  printf '\n%s$ %s%s\n' "$bold" "${*/#$build\/bin\//}" "$off"
  local start end rc=0
  start=$(date +%s%N)
  "$@" || rc=$?
  end=$(date +%s%N)
  printf '%s(exit status %d, %d ms)%s\n' "$dim" "$rc" $(((end - start) / 1000000)) "$off"
  return "$rc"
}

echo "azote demo: a host controller (gRPC + mutual TLS, audit log, SQLite) in $state"
"$build/bin/azote-controller" --state-dir "$state" --on-exit stop > "$state/controller.out" 2> "$state/controller.log" &
ctl=$!
for _ in $(seq 200); do grep -q ready "$state/controller.out" 2>/dev/null && break; sleep 0.05; done
grep -q ready "$state/controller.out" || { echo "demo: the controller did not start:" >&2; cat "$state/controller.log" >&2; exit 1; }
cat "$state/controller.out"

export AZOTE_ENDPOINT="unix:$state/api.sock" AZOTE_CREDENTIALS="$state/creds"
azote="$build/bin/azote"
step "$azote" admin issue-cert --state-dir "$state" --role control-plane --name demo --out "$state/creds"
step "$azote" describe-images
out=$(step "$azote" run-instances --image-id ami-builtin --instance-type t3.micro --wait --output text 2>&1) || { echo "$out"; exit 1; }
echo "$out"
id=$(grep -o 'i-[0-9a-f]\{17\}' <<<"$out" | head -1)
step "$azote" describe-instances
# Who runs what: the launcher is the one root process; the controller and the
# instance's azote-hv, block card and network card (one identity per instance) run under
# their own uids, with no capabilities, every thread under a seccomp filter, each in a
# cgroup of its own (this host's tree: azote-<hash>, named in the controller's log).
tree=$(grep -o 'cgroups azote-[0-9a-f]*' "$state/controller.log" | head -1 | cut -d' ' -f2)
printf '\n%s$ # the host'"'"'s processes (from /proc)%s\n' "$bold" "$off"
printf '%-16s %7s %11s %-26s %-17s %s\n' PROCESS PID UID SECCOMP CAPEFF CGROUP
for pid in $(pgrep 'azote-'); do
  grep -q "$tree" "/proc/$pid/cgroup" 2>/dev/null || [[ $(cat /proc/$pid/comm) == azote-launcher && $(tr '\0' ' ' < /proc/$pid/cmdline) == *"$state"* ]] || continue
  threads=0 filtered=0
  for t in /proc/$pid/task/*; do
    threads=$((threads + 1))
    [[ $(awk '/^Seccomp:/ {print $2}' "$t/status") == 2 ]] && filtered=$((filtered + 1))
  done
  cg=$(awk -F: '$2 == "memory" {print $3}' "/proc/$pid/cgroup")
  printf '%-16s %7s %11s %-26s %-17s %s\n' "$(cat /proc/$pid/comm)" "$pid" "$(awk '/^Uid:/ {print $2}' /proc/$pid/status)" \
    "filter on $filtered/$threads threads" "$(awk '/^CapEff:/ {print $2}' /proc/$pid/status)" "${cg#*/$tree}"
done
for _ in $(seq 50); do "$azote" get-console-output --instance-id "$id" | grep -q 'azote-guest: ready' && break; sleep 0.1; done
step "$azote" get-console-output --instance-id "$id"
# The root of trust: azote-rot's DICE layers (development mode: an unsigned build), and an
# attestation document for the instance (every PCR zero in development mode).
step "$azote" describe-host-attestation
step "$azote" get-instance-attestation --instance-id "$id" --nonce 00112233
# NitroTPM: an image registered with TPM support; its instance's boot is measured into
# its own TPM (PCR 4 kernel, 12 command line), which the guest reads back.
out=$(step "$azote" register-image --name tpm-demo --kernel "$build/bin/azote-guest.elf" --cmdline azote.run=tpm-pcrs \
        --tpm-support v2.0 --output text 2>&1) || { echo "$out"; exit 1; }
echo "$out"
ami=$(grep -o 'ami-[0-9a-f]\{17\}' <<<"$out" | head -1)
out=$(step "$azote" run-instances --image-id "$ami" --instance-type t3.nano --no-network-interface --output text 2>&1) || { echo "$out"; exit 1; }
echo "$out"
tpm_id=$(awk '$1 == "INSTANCES" {print $2; exit}' <<<"$out")
for _ in $(seq 100); do "$azote" get-console-output --instance-id "$tpm_id" | grep -q 'tpm-pcrs ok' && break; sleep 0.1; done
printf '\n%s$ azote get-console-output --instance-id %s | grep -E "tpm-crb|sha256 (4|12) |tpm-pcrs"%s\n' "$bold" "$tpm_id" "$off"
"$azote" get-console-output --instance-id "$tpm_id" | grep -E 'tpm-crb|sha256 (4|12) |tpm-pcrs' || { echo "demo: no TPM output" >&2; exit 1; }
step "$azote" terminate-instances --instance-ids "$tpm_id" --wait
step "$azote" describe-volumes
step "$azote" terminate-instances --instance-ids "$id" --wait
step "$azote" describe-instances --instance-ids "$id"
step "$azote" audit verify "$state/audit/audit.log"

printf '\n%s$ kill -TERM <azote-controller>%s\n' "$bold" "$off"
kill "$ctl"
wait "$ctl" && echo "azote-controller stopped cleanly"
ctl=
left=$(pgrep -f "$state" || true)
for pid in $(pgrep 'azote-'); do
  grep -q "$tree" "/proc/$pid/cgroup" 2>/dev/null && left="$left $pid"
done
[[ -z ${left// /} ]] || { echo "demo: processes left behind: $left" >&2; exit 1; }
echo "No process of this host is left running. (make test runs every test.)"

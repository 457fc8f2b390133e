#!/usr/bin/env bash
# Card cores, guest cores: how much a neighbour instance that drives its block device and
# its ENI flat out disturbs a guest's CPU work, when the cards and the neighbour run on
# cores of their own (as --card-cpus arranges for the controller's processes).
#
#   bench/jitter/run.sh BUILD_DIR [RUNS] [MIB]     writes bench/results/jitter.json
#
# The measured guest runs the built-in guest's `cpu MIB` (SHA-256 over MIB MiB in guest user
# mode; it prints the TSC cycles it took) RUNS times on the guest core (the first CPU this
# script may use), in pairs: once with the neighbour frozen (SIGSTOP: "alone"), once with it
# working on the card core (the last CPU), so slow drifts of the machine hit both alike. The
# neighbour: an azote-hv running `blk-bench` (QD32, random 4 KiB and
# sequential 1 MiB reads and writes) against azote-card-blk, and two more azote-hv on
# azote-card-net, one running `net-bench` (UDP datagrams as fast as it can) to the other's
# `net-echo`. Every card and neighbour process is pinned to the card core with taskset.
# Reported: median and p99 of the run times, and the neighbour's change of each. Goal
# (issue 10): median < +2 %, p99 < +5 %.
#
# Processes are started by hand here (not through the controller), unconfined by the
# launcher but each under its own seccomp filters: the controller's two-CPU split puts
# every guest vCPU on one core, which would measure vCPU sharing, not device work.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(cd "${1:-build}" && pwd)
runs=${2:-15}
mib=${3:-64}
log() { printf 'jitter: %s\n' "$*" >&2; }
for b in azote-hv azote-card-blk azote-card-net; do
  [[ -x $build/bin/$b ]] || { log "$build/bin/$b is missing (make)"; exit 2; }
done
cpus=$(taskset -pc $$ | sed 's/.*: //')
first=$(python3 -c "import os; print(min(os.sched_getaffinity(0)))")
last=$(python3 -c "import os; print(max(os.sched_getaffinity(0)))")
[[ $first != "$last" ]] || { log "needs two CPUs (this process may use $cpus)"; exit 2; }
guest_cpu=$first card_cpu=$last
log "guest core $guest_cpu, card core $card_cpu (of $cpus); $runs runs of cpu $mib"

work=$(mktemp -d /tmp/azote-jitter.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
on_card() { taskset -c "$card_cpu" "$@"; }

one_run() {  # prints the cycles of one `cpu` run on the guest core
  taskset -c "$guest_cpu" "$build/bin/azote-hv" --kernel builtin:cpu --cmdline "$mib" --memory 256M --vcpus 1 \
    | sed -n 's/.*cycles=\([0-9]*\).*/\1/p'
}

start_neighbour() {
  truncate -s 1G "$work/vol.img"
  on_card "$build/bin/azote-card-blk" --volume "socket=$work/vol.sock,file=$work/vol.img,queues=2" > "$work/blk.log" 2>&1 &
  pids+=($!)
  cat > "$work/card.json" <<EOF
{"region": "bench-1", "vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16"}],
 "security_groups": [{"id": "sg-j", "ingress": [{"protocol": "-1", "cidr": "10.0.0.0/16"}]}],
 "enis": [{"id": "eni-e", "socket": "$work/e.sock", "mac": "02:00:00:00:00:0e", "ip": "10.0.1.5", "vpc": "vpc-1", "subnet": "10.0.1.0/24", "security_groups": ["sg-j"]},
          {"id": "eni-b", "socket": "$work/b.sock", "mac": "02:00:00:00:00:0b", "ip": "10.0.1.6", "vpc": "vpc-1", "subnet": "10.0.1.0/24", "security_groups": ["sg-j"]}]}
EOF
  on_card "$build/bin/azote-card-net" --config "$work/card.json" --imds off > "$work/net.log" 2>&1 &
  pids+=($!)
  for s in vol e b; do for _ in $(seq 100); do [[ -S $work/$s.sock ]] && break; sleep 0.05; done; done
  # The neighbour's guests: forever (blk-bench for an hour, net-bench likewise), killed at the end.
  on_card "$build/bin/azote-hv" --kernel builtin:blk-bench --cmdline "32 3600 2" --memory 256M \
    --device "blk,socket=$work/vol.sock" > "$work/blk-bench.out" 2>&1 &
  pids+=($!)
  on_card "$build/bin/azote-hv" --kernel builtin:net-echo --memory 128M --device "net,socket=$work/e.sock" \
    > "$work/echo.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do grep -q "ip=10.0.1.5" "$work/echo.out" && break; sleep 0.05; done
  on_card "$build/bin/azote-hv" --kernel builtin:net-bench --cmdline "10.0.1.5 7 3600 1400" --memory 128M \
    --device "net,socket=$work/b.sock" > "$work/net-bench.out" 2>&1 &
  pids+=($!)
  sleep 2
  grep -q "virtio-blk" "$work/blk-bench.out" || { log "the block neighbour did not start: $(cat "$work/blk-bench.out" "$work/blk.log")"; exit 1; }
  grep -q "ip=10.0.1.6" "$work/net-bench.out" || { log "the network neighbour did not start: $(cat "$work/net-bench.out")"; exit 1; }
}

neighbour_busy() {  # the card core's share of busy time over one second (0..1)
  local a b
  a=$(awk -v c="cpu$card_cpu" '$1 == c {print $2+$3+$4, $2+$3+$4+$5}' /proc/stat)
  sleep 1
  b=$(awk -v c="cpu$card_cpu" '$1 == c {print $2+$3+$4, $2+$3+$4+$5}' /proc/stat)
  python3 -c "a='$a'.split(); b='$b'.split(); print(round((float(b[0])-float(a[0]))/max(1.0,float(b[1])-float(a[1])), 3))"
}

alone=() busy=()
start_neighbour
busy_share=$(neighbour_busy)
log "neighbour running: card core busy $busy_share of the time"
for i in $(seq "$runs"); do
  kill -STOP "${pids[@]}"
  alone+=("$(one_run)")
  kill -CONT "${pids[@]}"
  sleep 0.2
  busy+=("$(one_run)")
done
log "alone: ${alone[*]}"
log "with the neighbour: ${busy[*]}"
kill "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true
pids=()

python3 - "$repo/bench/results/jitter.json" "$runs" "$mib" "$guest_cpu" "$card_cpu" "$busy_share" "${alone[*]}" "${busy[*]}" <<'PY'
import json, statistics, sys, datetime, os
out, runs, mib, gcpu, ccpu, busy_share = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], float(sys.argv[6])
alone = [int(x) for x in sys.argv[7].split()]
busy = [int(x) for x in sys.argv[8].split()]
def p99(v):
    s = sorted(v); k = max(0, min(len(s) - 1, int(round(0.99 * (len(s) - 1)))))
    return s[k]
r = {"date": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z", "runs": runs, "mib": mib,
     "guest_cpu": gcpu, "card_cpu": ccpu, "card_core_busy_share": busy_share,
     "alone_cycles": alone, "neighbour_cycles": busy,
     "alone_median": statistics.median(alone), "neighbour_median": statistics.median(busy),
     "alone_p99": p99(alone), "neighbour_p99": p99(busy)}
r["median_change_pct"] = round(100.0 * (r["neighbour_median"] / r["alone_median"] - 1), 2)
r["p99_change_pct"] = round(100.0 * (r["neighbour_p99"] / r["alone_p99"] - 1), 2)
r["goal_met"] = r["median_change_pct"] < 2 and r["p99_change_pct"] < 5
os.makedirs(os.path.dirname(out), exist_ok=True)
json.dump(r, open(out, "w"), indent=1)
print(f"median {r['alone_median']} -> {r['neighbour_median']} cycles ({r['median_change_pct']:+.2f} %), "
      f"p99 {r['alone_p99']} -> {r['neighbour_p99']} ({r['p99_change_pct']:+.2f} %); card core busy {busy_share:.0%}; "
      f"goal {'met' if r['goal_met'] else 'NOT met'}")
PY

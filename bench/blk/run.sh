#!/usr/bin/env bash
# Block I/O through azote-card-blk vs fio with io_uring on the same backing file, same
# queue depth, in one run; with and without AES-XTS; plus azote-hv's CPU split (vCPU
# threads vs the rest) and its MMIO exits during the run (the quiescence measurement).
#
#   bench/blk/run.sh BUILD_DIR [QD] [SECONDS]      writes bench/results/blk.json
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(cd "${1:-build}" && pwd)
qd=${2:-32}
secs=${3:-3}
out=$repo/bench/results/blk.json
work=$(mktemp -d /var/tmp/azote-blk-bench.XXXXXX)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
log() { printf 'bench-blk: %s\n' "$*" >&2; }

command -v fio >/dev/null || { log "fio missing (make deps)"; exit 2; }
img=$work/disk.img
log "writing a 1 GiB image of random data (so reads hit the disk, not holes)"
dd if=/dev/urandom of="$img" bs=1M count=1024 status=none oflag=direct
head -c 64 /dev/urandom > "$work/key"

# fio: the same four tests blk-bench runs, io_uring, O_DIRECT, same queue depth.
fio_test() { # name rw bs
  fio --name="$1" --filename="$img" --ioengine=io_uring --direct=1 --rw="$2" --bs="$3" --iodepth="$qd" \
      --runtime="$secs" --time_based --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; r=j["read"]["iops"]+j["write"]["iops"]; b=j["read"]["bw_bytes"]+j["write"]["bw_bytes"]; print(f"{r:.0f} {b/1e6:.1f}")'
}

# The card + azote-hv + the guest's blk-bench; prints the guest's lines, then the
# stats JSON path. Card CPU time is read from /proc before it exits.
card_run() { # label extra-volume-options
  local sock=$work/$1.sock stats=$work/$1.stats.json
  "$build/bin/azote-card-blk" --volume "socket=$sock,file=$img$2" > "$work/$1.card.log" 2>&1 &
  local card=$!
  for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.02; done
  local t0; t0=$(awk '{print $14+$15}' /proc/$card/stat)
  "$build/bin/azote-hv" --kernel builtin:blk-bench --cmdline "$qd $secs" --memory 512M \
     --device "blk,socket=$sock" --stats "$stats" > "$work/$1.guest.txt"
  local t1; t1=$(awk '{print $14+$15}' /proc/$card/stat)
  kill -TERM $card; wait $card || true
  echo "$(( t1 - t0 ))" > "$work/$1.card_ticks"
}

log "fio (io_uring, direct, qd=$qd, ${secs}s per test)"
declare -A fio
fio[randread]=$(fio_test randread randread 4k)
fio[randwrite]=$(fio_test randwrite randwrite 4k)
fio[seqread]=$(fio_test seqread read 1M)
fio[seqwrite]=$(fio_test seqwrite write 1M)
log "card, plain"
card_run plain ""
log "card, AES-XTS"
card_run aes ",key-file=$work/key"

python3 - "$work" "$out" "$qd" "$secs" "$(getconf CLK_TCK)" \
  "${fio[randread]}" "${fio[randwrite]}" "${fio[seqread]}" "${fio[seqwrite]}" <<'PY'
import json, re, sys, os, datetime
work, out, qd, secs, tck = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
fio = dict(zip(["randread", "randwrite", "seqread", "seqwrite"], [list(map(float, a.split())) for a in sys.argv[6:10]]))
res = {"when": datetime.datetime.utcnow().isoformat() + "Z", "qd": qd, "seconds_per_test": secs,
       "loadavg": open("/proc/loadavg").read().split()[:3], "fio_io_uring": {k: {"iops": v[0], "mbps": v[1]} for k, v in fio.items()},
       "card": {}}
for label in ["plain", "aes"]:
    text = open(f"{work}/{label}.guest.txt").read()
    tests, ops = {}, 0
    for m in re.finditer(r"test=(\w+) bs=\d+ qd=\d+ ops=(\d+) seconds=([0-9.]+) iops=(\d+) mbps=([0-9.]+)", text):
        tests[m[1]] = {"iops": int(m[4]), "mbps": float(m[5]), "ratio_to_fio": round(
            (int(m[4]) if m[1].startswith("rand") else float(m[5])) /
            (fio[m[1]][0] if m[1].startswith("rand") else fio[m[1]][1]), 3)}
        ops += int(m[2])
    st = json.load(open(f"{work}/{label}.stats.json"))
    vcpu = sum(v["user_s"] + v["sys_s"] for v in st["vcpus"])
    card_cpu = int(open(f"{work}/{label}.card_ticks").read()) / tck
    res["card"][label] = {"tests": tests, "ops": ops,
        "card_cpu_s": card_cpu, "card_cpu_us_per_op": round(card_cpu * 1e6 / ops, 2) if ops else None,
        "hv_vcpu_cpu_s": round(vcpu, 3), "hv_other_threads_cpu_s": st["non_vcpu_cpu_s"],
        "hv_exits": {k: sum(v["exits"][k] for v in st["vcpus"]) for k in ("io", "mmio", "other")}}
json.dump(res, open(out, "w"), indent=2)
print(json.dumps(res, indent=2))
PY

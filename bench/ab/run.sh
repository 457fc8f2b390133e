#!/usr/bin/env bash
# A/B: two builds of azote (before and after a change) measured in one run, round by round
# interleaved, on the same machine: launch p50 and burst rate through the controller, azote-hv
# start->exit of the built-in hello, 4 KiB random read/write IOPS through azote-card-blk, and
# the VPC card's 64-byte UDP packets/s and TCP Gbit/s (bench/net/run.sh's "card" path).
#
#   bench/ab/run.sh BEFORE_BUILD AFTER_BUILD [ROUNDS]     writes bench/results/ab.json
#
# Each build is used as is (its own binaries, its own scripts' expectations of them: the
# "after" controller runs under its launcher, as root). Goal of issue 10: launch p50 at most
# +10 ms, every data path within 10 % of before.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
before=$(cd "$1" && pwd)
after=$(cd "$2" && pwd)
rounds=${3:-2}
out=$repo/bench/results/ab.json
work=$(mktemp -d /var/tmp/azote-ab.XXXXXX)
# The per-path scripts write their own results files; keep the committed ones as they were.
cp "$repo/bench/results/controller.json" "$work/keep.controller.json" 2>/dev/null || true
cp "$repo/bench/results/net.json" "$work/keep.net.json" 2>/dev/null || true
restore() {
  cp "$work/keep.controller.json" "$repo/bench/results/controller.json" 2>/dev/null || true
  cp "$work/keep.net.json" "$repo/bench/results/net.json" 2>/dev/null || true
}
trap 'pkill -P $$ 2>/dev/null || true; restore; rm -rf "$work"' EXIT
log() { printf 'bench-ab: %s\n' "$*" >&2; }
for b in "$before" "$after"; do
  for f in azote-hv azote-card-blk azote-card-net azote-controller azote azote-launch-bench azote-tap-bridge; do
    [[ -x $b/bin/$f ]] || { log "$b/bin/$f is missing"; exit 2; }
  done
done
log "writing a 1 GiB image of random data for the block test"
dd if=/dev/urandom of="$work/disk.img" bs=1M count=1024 status=none

launch() {  # build label round -> launch p50 ms, burst launches/s
  "$repo/bench/controller/run.sh" "$1" 30 10 > /dev/null 2> "$work/launch.$2.$3.log"
  cp "$repo/bench/results/controller.json" "$work/launch.$2.$3.json"
}

hello() {  # build label round -> median start->exit ms over 20 runs
  python3 - "$1/bin/azote-hv" > "$work/hello.$2.$3.txt" <<'PY'
import subprocess, sys, time, statistics
t = []
for _ in range(20):
    s = time.monotonic()
    r = subprocess.run([sys.argv[1], "--kernel", "builtin:hello", "--memory", "128M"], capture_output=True)
    t.append((time.monotonic() - s) * 1000)
    assert r.returncode == 0, r.stderr
print(round(statistics.median(t), 2))
PY
}

blk() {  # build label round -> randread and randwrite IOPS, QD32, 3 s each
  local sock=$work/blk.$2.$3.sock
  "$1/bin/azote-card-blk" --volume "socket=$sock,file=$work/disk.img" > "$work/card.$2.$3.log" 2>&1 &
  local card=$!
  for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
  "$1/bin/azote-hv" --kernel builtin:blk-bench --cmdline "32 3 1" --memory 256M --device "blk,socket=$sock" \
    > "$work/blk.$2.$3.out" 2>&1 || true
  kill "$card" 2>/dev/null || true
  wait "$card" 2>/dev/null || true
}

net() {  # build label round -> the card path of bench/net/run.sh (5 s per test)
  PATHS=card "$repo/bench/net/run.sh" "$1" 5 > /dev/null 2> "$work/net.$2.$3.log" || true
  cp "$repo/bench/results/net.json" "$work/net.$2.$3.json" 2>/dev/null || true
}

for r in $(seq "$rounds"); do
  for pair in "before:$before" "after:$after"; do
    label=${pair%%:*} build=${pair#*:}
    log "round $r, $label: launches"; launch "$build" "$label" "$r"
    log "round $r, $label: hello"; hello "$build" "$label" "$r"
    log "round $r, $label: block"; blk "$build" "$label" "$r"
    log "round $r, $label: network"; net "$build" "$label" "$r"
  done
done

python3 - "$work" "$rounds" "$out" "$(cd "$before" && git -C "$repo" rev-parse --short HEAD 2>/dev/null || true)" <<'PY'
import json, re, statistics, sys, os, datetime, glob
work, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def med(v):
    v = [x for x in v if x is not None]
    return round(statistics.median(v), 2) if v else None
res = {}
for label in ("before", "after"):
    L, B, H, RR, RW, PPS, TCP = [], [], [], [], [], [], []
    for r in range(1, rounds + 1):
        try:
            j = json.load(open(f"{work}/launch.{label}.{r}.json"))
            L.append(j.get("p50_ms")); B.append(j.get("burst_launches_per_s"))
        except Exception:
            pass
        try:
            H.append(float(open(f"{work}/hello.{label}.{r}.txt").read()))
        except Exception:
            pass
        try:
            t = open(f"{work}/blk.{label}.{r}.out").read()
            m = re.search(r"test=randread .* iops=(\d+)", t); RR.append(float(m.group(1)) if m else None)
            m = re.search(r"test=randwrite .* iops=(\d+)", t); RW.append(float(m.group(1)) if m else None)
        except Exception:
            pass
        try:
            n = dict(json.load(open(f"{work}/net.{label}.{r}.json"))["paths"]).get("card", {})
            PPS.append(n.get("udp64_received_pps")); TCP.append(n.get("tcp_gbps"))
        except Exception:
            pass
    res[label] = {"launch_p50_ms": med(L), "burst_launches_per_s": med(B), "hello_ms": med(H),
                  "blk_randread_iops": med(RR), "blk_randwrite_iops": med(RW),
                  "net_udp64_pps": med(PPS), "net_tcp_gbps": med(TCP),
                  "samples": {"launch_p50_ms": L, "burst": B, "hello_ms": H, "randread": RR, "randwrite": RW, "pps": PPS, "tcp": TCP}}
ratio = {}
for k in ("burst_launches_per_s", "blk_randread_iops", "blk_randwrite_iops", "net_udp64_pps", "net_tcp_gbps"):
    b, a = res["before"][k], res["after"][k]
    ratio[k] = round(a / b, 3) if a and b else None
for k in ("launch_p50_ms", "hello_ms"):
    b, a = res["before"][k], res["after"][k]
    ratio[k + "_delta"] = round(a - b, 2) if a is not None and b is not None else None
doc = {"date": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z", "rounds": rounds,
       "loadavg": os.getloadavg()[0], "results": res, "after_vs_before": ratio}
json.dump(doc, open(out, "w"), indent=1)
print(json.dumps({"results": {k: {kk: vv for kk, vv in v.items() if kk != "samples"} for k, v in res.items()},
                  "after_vs_before": ratio}, indent=1))
PY

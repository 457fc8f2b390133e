#!/usr/bin/env bash
# Instance networking through azote-card-net vs the Linux kernel's veth + bridge path, in
# one run on this machine, with the same tools at both ends (iperf3, ping):
#
#   kernel      two namespaces, each with a veth into one Linux bridge (the reference)
#   card        two namespace instances, each a TAP attached to the card by azote-tap-bridge
#               (vhost-user virtio-net), one card on one host
#   cards       the same two instances, one card each (as the controller runs them): frames
#               cross between the cards through the receiver's inbox socket
#   fabric-aes  two namespace "hosts" joined by a veth, one card in each, one instance on
#               each; instance traffic crosses the Geneve fabric sealed with AES-256-GCM
#   fabric-none the same with the fabric's unencrypted mode (for the cost of the crypto)
#
# For each: UDP packets/s with 64-byte frames (iperf3 -u -l 18, as received), TCP Gbit/s
# with 1500-byte frames (iperf3 -u -l 1472, as received), TCP Gbit/s (iperf3; MSS 1448,
# the kernel path's segmentation offloads switched off so that its frames are 1500 bytes
# too, and measured once with them on for reference), and ICMP round-trip p50/p99 (ping
# every 1 ms). The card is pinned to the last online CPU (one core); everything else may run anywhere.
#
#   bench/net/run.sh BUILD_DIR [SECONDS]       writes bench/results/net.json
#   PATHS="kernel card" bench/net/run.sh ...     only some paths (default: all five)
#
# Needs root (namespaces), iperf3, ping, ip. Addresses: only 10.99.0.0/24 on the kernel
# path's bridge, 192.168.77.0/30 on the fabric's underlay veth and the VPC model
# 10.0.1.0/24 inside the cards; all in namespaces this script creates and deletes.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(cd "${1:-build}" && pwd)
secs=${2:-5}
out=$repo/bench/results/net.json
work=$(mktemp -d /var/tmp/azote-net-bench.XXXXXX)
tag=azb$$
log() { printf 'bench-net: %s\n' "$*" >&2; }
namespaces=()
cleanup() {
  pkill -P $$ 2>/dev/null || true
  for ns in "${namespaces[@]}"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

[[ $(id -u) -eq 0 ]] || { log "needs root (network namespaces)"; exit 2; }
for t in iperf3 ping ip taskset ethtool python3; do command -v $t >/dev/null || { log "$t missing (make deps)"; exit 2; }; done
card_cpu=$(( $(nproc) - 1 ))   # the last online CPU, whatever the core count
paths=${PATHS:-kernel card cards fabric-aes fabric-none}
if [[ $paths != kernel ]]; then
  for b in azote-card-net azote-tap-bridge; do
    [[ -x $build/bin/$b ]] || { log "$build/bin/$b missing (build first)"; exit 2; }
  done
fi

newns() { ip netns add "$1"; namespaces+=("$1"); ip -n "$1" link set lo up; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
wait_file() {
  for _ in $(seq 250); do [[ -e $1 ]] && return 0; sleep 0.02; done
  log "timed out waiting for $1"; tail -n 5 "$work"/*.log >&2 || true; return 1
}

# measure LABEL CLIENT_NS SERVER_NS SERVER_IP CARD_PIDS... -> $work/LABEL.json
measure() {
  local label=$1 cns=$2 sns=$3 sip=$4
  shift 4
  local pids=("$@")
  in_ns "$sns" iperf3 -s -D -1 -p 5201 --logfile "$work/$label.srv1.log" >/dev/null
  sleep 0.3
  local t0 t1
  t0=$(cpu_ticks "${pids[@]}")
  in_ns "$cns" iperf3 -c "$sip" -p 5201 -u -l 18 -b 0 -t "$secs" -J > "$work/$label.udp64.json" || true
  t1=$(cpu_ticks "${pids[@]}")
  echo "$((t1 - t0))" > "$work/$label.udp64.ticks"
  in_ns "$sns" iperf3 -s -D -1 -p 5202 --logfile "$work/$label.srv2.log" >/dev/null
  sleep 0.3
  t0=$(cpu_ticks "${pids[@]}")
  in_ns "$cns" iperf3 -c "$sip" -p 5202 -u -l 1472 -b 0 -t "$secs" -J > "$work/$label.udp1500.json" || true
  t1=$(cpu_ticks "${pids[@]}")
  echo "$((t1 - t0))" > "$work/$label.udp1500.ticks"
  in_ns "$sns" iperf3 -s -D -1 -p 5203 --logfile "$work/$label.srv3.log" >/dev/null
  sleep 0.3
  t0=$(cpu_ticks "${pids[@]}")
  in_ns "$cns" iperf3 -c "$sip" -p 5203 -t "$secs" -J > "$work/$label.tcp.json" || true
  t1=$(cpu_ticks "${pids[@]}")
  echo "$((t1 - t0))" > "$work/$label.tcp.ticks"
  in_ns "$cns" ping -n -i 0.001 -c 2000 -W 1 "$sip" > "$work/$label.ping.txt" || true
}
cpu_ticks() {
  local sum=0 p
  for p in "$@"; do
    [[ -r /proc/$p/stat ]] && sum=$((sum + $(awk '{print $14+$15}' "/proc/$p/stat")))
  done
  echo "$sum"
}

# --- kernel: veth + bridge -------------------------------------------------------------
kernel_path() {
  log "kernel path: veth + bridge"
  local h=${tag}h a=${tag}a b=${tag}b
  newns "$h"; newns "$a"; newns "$b"
  ip -n "$h" link add br0 type bridge
  ip -n "$h" link set br0 up
  for x in a b; do
    local ns=${tag}$x
    ip link add "v$tag$x" netns "$h" type veth peer name eth0 netns "$ns"
    ip -n "$h" link set "v$tag$x" master br0 up
    ip -n "$ns" link set eth0 up
  done
  ip -n "$a" addr add 10.99.0.1/24 dev eth0
  ip -n "$b" addr add 10.99.0.2/24 dev eth0
  # TCP with the kernel's segmentation offloads (64 KiB "frames" on veth), as deployed ...
  in_ns "$b" iperf3 -s -D -1 -p 5209 --logfile "$work/kernel.srv9.log" >/dev/null
  sleep 0.3
  in_ns "$a" iperf3 -c 10.99.0.2 -p 5209 -t "$secs" -J > "$work/kernel.tcp_offloads.json" || true
  # ... and without them, so every frame on the path is at most 1500 bytes as through the
  # card (which offers no offloads): the comparable figure.
  for ns in "$a" "$b"; do in_ns "$ns" ethtool -K eth0 tso off gso off gro off >/dev/null 2>&1; done
  for x in a b; do in_ns "$h" ethtool -K "v$tag$x" tso off gso off gro off >/dev/null 2>&1; done
  measure kernel "$a" "$b" 10.99.0.2
}

# --- an instance namespace on a card ---------------------------------------------------
# instance NS SOCKET IP: azote-tap-bridge in NS, address and route set statically (DHCP is
# tested elsewhere; here only the data path is measured).
instance() {
  local ns=$1 sock=$2 ip4=$3 host_ns=${4:-}
  newns "$ns"
  wait_file "$sock"
  ip netns exec "$ns" "$build/bin/azote-tap-bridge" --socket "$sock" --tap eth0 > "$work/$ns.bridge.log" 2>&1 &
  for _ in $(seq 250); do grep -q " up " "$work/$ns.bridge.log" 2>/dev/null && break; sleep 0.02; done
  grep -q " up " "$work/$ns.bridge.log" || { log "bridge in $ns did not come up: $(cat "$work/$ns.bridge.log")"; return 1; }
  ip -n "$ns" addr add "$ip4/24" dev eth0
  ip -n "$ns" route add default via 10.0.1.1
}

sg='"security_groups": [{"id": "sg-bench", "ingress": [{"protocol": "-1", "cidr": "10.0.0.0/16"}]}]'
eni() { # id mac ip [extra keys]
  printf '{"id": "%s", "socket": "%s", "mac": "%s", "ip": "%s", "vpc": "vpc-1", "subnet": "10.0.1.0/24", "security_groups": ["sg-bench"]%s}' \
    "$1" "$work/$1.sock" "$2" "$3" "${4:-}"
}
neighbour() { # id mac ip: an ENI another card serves (its inbox; this uid)
  printf '{"id": "%s", "mac": "%s", "ip": "%s", "vpc": "vpc-1", "subnet": "10.0.1.0/24", "security_groups": ["sg-bench"], "inbox": "%s", "uid": %s}' \
    "$1" "$2" "$3" "$work/$1.inbox" "$(id -u)"
}

card_path() {
  log "card path: one card, two namespace instances"
  cat > "$work/card.json" <<EOF
{"region": "bench-1", "vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16"}], $sg,
 "enis": [$(eni eni-a 02:00:00:00:00:0a 10.0.1.5), $(eni eni-b 02:00:00:00:00:0b 10.0.1.6)]}
EOF
  taskset -c "$card_cpu" "$build/bin/azote-card-net" --config "$work/card.json" > "$work/card.log" 2>&1 &
  local card=$!
  instance "${tag}ca" "$work/eni-a.sock" 10.0.1.5
  instance "${tag}cb" "$work/eni-b.sock" 10.0.1.6
  measure card "${tag}ca" "${tag}cb" 10.0.1.6 "$card"
  kill -TERM "$card"; wait "$card" || true
}

cards_path() {
  log "cards path: one card per instance, two namespace instances"
  local x other mine_ip mine_mac their_ip their_mac
  for x in a b; do
    if [[ $x == a ]]; then
      other=b mine_ip=10.0.1.5 mine_mac=02:00:00:00:00:0a their_ip=10.0.1.6 their_mac=02:00:00:00:00:0b
    else
      other=a mine_ip=10.0.1.6 mine_mac=02:00:00:00:00:0b their_ip=10.0.1.5 their_mac=02:00:00:00:00:0a
    fi
    printf '{"region": "bench-1", "vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16"}], %s,\n "enis": [%s],\n "neighbours": [%s]}\n' \
      "$sg" "$(eni "eni-$x" "$mine_mac" "$mine_ip" ", \"inbox\": \"$work/eni-$x.inbox\"")" \
      "$(neighbour "eni-$other" "$their_mac" "$their_ip")" > "$work/cards-$x.json"
    # Each card in a network namespace of its own, as the launcher makes them, with the
    # datagram queue it sets there (net.unix.max_dgram_qlen 1024: the inbox sockets').
    newns "${tag}n$x"
    ip netns exec "${tag}n$x" sysctl -qw net.unix.max_dgram_qlen=1024
    ip netns exec "${tag}n$x" taskset -c "$card_cpu" "$build/bin/azote-card-net" --config "$work/cards-$x.json" --imds off \
      > "$work/cards-$x.log" 2>&1 &
    eval "cards_$x=\$!"
  done
  instance "${tag}da" "$work/eni-a.sock" 10.0.1.5
  instance "${tag}db" "$work/eni-b.sock" 10.0.1.6
  # shellcheck disable=SC2154
  measure cards "${tag}da" "${tag}db" 10.0.1.6 "$cards_a" "$cards_b"
  kill -TERM "$cards_a" "$cards_b"; wait "$cards_a" "$cards_b" || true
}

# fabric_path LABEL CIPHER: two host namespaces, a card in each (see src/cards/net/DESIGN.md
# for the fabric configuration).
fabric_path() {
  local label=$1 cipher=$2 h=${tag}${1:7:4}
  log "fabric path ($cipher): two hosts, one instance on each"
  newns "${h}1"; newns "${h}2"
  ip link add "u$tag" netns "${h}1" mtu 1600 type veth peer name "u$tag" netns "${h}2" mtu 1600
  ip -n "${h}1" addr add 192.168.77.1/30 dev "u$tag"; ip -n "${h}1" link set "u$tag" up
  ip -n "${h}2" addr add 192.168.77.2/30 dev "u$tag"; ip -n "${h}2" link set "u$tag" up
  local key='"key": "'$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')'", '
  [[ $cipher == none ]] && key=  # the plaintext mode takes no key
  for i in 1 2; do
    local me=$i peer=$((3 - i)) ip4 mac
    ip4=10.0.1.$((4 + i)); mac=02:00:00:00:00:0$i
    cat > "$work/$label$i.json" <<EOF
{"region": "bench-1", "vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/16"}], $sg,
 "enis": [$(eni "eni-$label$i" "$mac" "$ip4")],
 "fabric": {"host_id": $me, "underlay": "192.168.77.$me:6081",
            "peers": [{"host": $peer, "address": "192.168.77.$peer:6081", $key"key_id": 1, "cipher": "$cipher"}],
            "mappings": [{"vpc": "vpc-1", "ip": "10.0.1.$((4 + peer))", "host": $peer}]}}
EOF
    ip netns exec "${h}$i" taskset -c "$card_cpu" "$build/bin/azote-card-net" --config "$work/$label$i.json" \
      > "$work/$label$i.card.log" 2>&1 &
    eval "card$i=\$!"
  done
  instance "${h}a" "$work/eni-${label}1.sock" 10.0.1.5
  instance "${h}b" "$work/eni-${label}2.sock" 10.0.1.6
  # shellcheck disable=SC2154
  measure "$label" "${h}a" "${h}b" 10.0.1.6 "$card1" "$card2"
  kill -TERM "$card1" "$card2"; wait "$card1" "$card2" || true
}

read -r load1 _ </proc/loadavg
log "load average $load1 on $(nproc) CPUs"
for p in $paths; do
  case $p in
    kernel) kernel_path ;;
    card) card_path ;;
    cards) cards_path ;;
    fabric-aes) fabric_path fabric-aes aes-256-gcm ;;
    fabric-none) fabric_path fabric-none none ;;
    *) log "unknown path $p (kernel, card, cards, fabric-aes, fabric-none)"; exit 2 ;;
  esac
done

python3 - "$work" "$out" "$secs" "$(getconf CLK_TCK)" "$paths" <<'PY'
import json, re, sys, datetime, statistics
work, out, secs, tck = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def load(p):
    try:
        return json.load(open(p))
    except Exception as e:
        return {"error": f"{p}: {e}"}
res = {"when": datetime.datetime.utcnow().isoformat() + "Z", "seconds_per_test": secs,
       "loadavg": open("/proc/loadavg").read().split()[:3], "paths": {}}
for label in sys.argv[5].split():
    r = {}
    u = load(f"{work}/{label}.udp64.json")
    if "end" in u and "sum" in u["end"]:
        s = u["end"]["sum"]
        r["udp64_sent_pps"] = round(s["packets"] / s["seconds"])
        r["udp64_received_pps"] = round((s["packets"] - s["lost_packets"]) / s["seconds"])
        r["udp64_lost_percent"] = round(s["lost_percent"], 2)
    else:
        r["udp64_error"] = u.get("error", "no result")
    u = load(f"{work}/{label}.udp1500.json")
    if "end" in u and "sum" in u["end"]:
        s = u["end"]["sum"]
        r["udp1500_received_gbps"] = round((s["packets"] - s["lost_packets"]) * 1472 * 8 / s["seconds"] / 1e9, 3)
        r["udp1500_lost_percent"] = round(s["lost_percent"], 2)
    else:
        r["udp1500_error"] = u.get("error", "no result")
    if label == "kernel":
        t = load(f"{work}/kernel.tcp_offloads.json")
        if "end" in t and "sum_received" in t["end"]:
            r["tcp_gbps_with_offloads"] = round(t["end"]["sum_received"]["bits_per_second"] / 1e9, 3)
    t = load(f"{work}/{label}.tcp.json")
    if "end" in t and "sum_received" in t["end"]:
        r["tcp_gbps"] = round(t["end"]["sum_received"]["bits_per_second"] / 1e9, 3)
        r["tcp_retransmits"] = t["end"]["sum_sent"].get("retransmits")
    else:
        r["tcp_error"] = t.get("error", "no result")
    try:
        rtts = sorted(float(m) for m in re.findall(r"time=([0-9.]+) ms", open(f"{work}/{label}.ping.txt").read()))
        if rtts:
            q = lambda p: rtts[min(len(rtts) - 1, int(p * len(rtts)))]
            r["ping_replies"] = len(rtts)
            r["rtt_p50_us"] = round(q(0.50) * 1000, 1)
            r["rtt_p99_us"] = round(q(0.99) * 1000, 1)
    except OSError:
        pass
    if label != "kernel":
        for test in ["udp64", "udp1500", "tcp"]:
            try:
                r[f"card_cpu_s_{test}"] = int(open(f"{work}/{label}.{test}.ticks").read()) / tck
            except (OSError, ValueError):
                pass
    res["paths"][label] = r
k = res["paths"].get("kernel", {})
for label, r in res["paths"].items():
    if label == "kernel":
        continue
    ratio = {}
    if r.get("udp64_received_pps") and k.get("udp64_received_pps"):
        ratio["udp64_pps"] = round(r["udp64_received_pps"] / k["udp64_received_pps"], 3)
    if r.get("udp1500_received_gbps") and k.get("udp1500_received_gbps"):
        ratio["udp1500_gbps"] = round(r["udp1500_received_gbps"] / k["udp1500_received_gbps"], 3)
    if r.get("tcp_gbps") and k.get("tcp_gbps"):
        ratio["tcp_gbps"] = round(r["tcp_gbps"] / k["tcp_gbps"], 3)
    if r.get("rtt_p50_us") and k.get("rtt_p50_us"):
        ratio["rtt_p50_added_us"] = round(r["rtt_p50_us"] - k["rtt_p50_us"], 1)
        ratio["rtt_p99_added_us"] = round(r["rtt_p99_us"] - k["rtt_p99_us"], 1)
    r["vs_kernel"] = ratio
# One card per instance against one card for both, same run.
c, cs = res["paths"].get("card", {}), res["paths"].get("cards", {})
if c and cs:
    cs["vs_card"] = {k2: round(cs[k1] / c[k1], 3) for k1, k2 in
                     [("udp64_received_pps", "udp64_pps"), ("udp1500_received_gbps", "udp1500_gbps"), ("tcp_gbps", "tcp_gbps")]
                     if cs.get(k1) and c.get(k1)}
    if cs.get("rtt_p50_us") and c.get("rtt_p50_us"):
        cs["vs_card"]["rtt_p50_added_us"] = round(cs["rtt_p50_us"] - c["rtt_p50_us"], 1)
json.dump(res, open(out, "w"), indent=2)
print(json.dumps(res, indent=2))
PY

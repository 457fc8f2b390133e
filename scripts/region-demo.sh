#!/usr/bin/env bash
# make demo: a region of azote hosts driven by the real aws CLI (Debian's /usr/bin/aws v2,
# unmodified). Starts, under a temp directory: etcd (one member, Debian's etcd-server: the
# region's store), N hosts (each an azote-controller with its launcher and cards), and
# azote-region (the EC2 Query API over HTTPS, SigV4); registers the hosts, writes an aws
# profile for a new principal, then: describe-regions, describe-availability-zones,
# describe-images, run-instances, wait instance-running, describe-instances (where each
# instance landed), get-console-output, terminate-instances, wait instance-terminated;
# verifies the region's audit log and stops everything.
# With --hosts 2 or more (as root, with iproute2 and nsenter): each host in its own network
# namespace, their fabric addresses on a bridge between them (the underlay); an instance
# on h1 answers pings from one on h2 over the encrypted fabric the region configured.
#
#   scripts/region-demo.sh [BUILD_DIR] [--hosts N]        (N: 1 to 4, default 1)
set -euo pipefail
build=build hosts=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --hosts) hosts=${2:?--hosts needs a number}; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) build=$1; shift ;;
  esac
done
[[ $hosts =~ ^[1-4]$ ]] || { echo "region-demo: --hosts takes 1 to 4, not $hosts" >&2; exit 2; }
build=$(cd "$build" && pwd)
for b in azote-region azote-controller azote azote-hv azote-card-blk azote-card-net; do
  [[ -x "$build/bin/$b" ]] || { echo "region-demo: $build/bin/$b is missing; run 'make' first" >&2; exit 1; }
done
for t in /usr/bin/etcd /usr/bin/aws; do
  [[ -x $t ]] || { echo "region-demo: $t is missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
if [[ ! -r /dev/kvm || ! -w /dev/kvm ]]; then
  echo "region-demo: /dev/kvm is not usable by $(id -un); azote-hv needs KVM" >&2
  exit 1
fi

# Hosts on a fabric: namespaces, a bridge for the underlay (root, iproute2, nsenter).
fabric=0
if ((hosts > 1)); then
  if [[ $(id -u) == 0 ]] && command -v ip > /dev/null && command -v nsenter > /dev/null; then
    fabric=1
  else
    echo "region-demo: the hosts run without a fabric between them (it needs root, ip and nsenter)" >&2
  fi
fi
if [[ -t 1 ]]; then bold=$'\033[1m' dim=$'\033[2m' off=$'\033[0m'; else bold='' dim='' off=''; fi
state=$(mktemp -d /tmp/azote-region.XXXXXX)
chmod 0755 "$state"  # the hosts' controllers run unprivileged and must reach their directories
pids=()
cleanup() {
  local p
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p=${pids[i]}
    kill -0 "$p" 2>/dev/null && { kill "$p"; wait "$p" 2>/dev/null || true; }
  done
  # Whatever is left of a host that never came up (a launcher restarting its controller).
  pkill -TERM -f "$state/" 2>/dev/null && sleep 1
  pkill -KILL -f "$state/" 2>/dev/null || true
  if ((fabric)); then
    for n in $(seq "$hosts"); do ip netns del "azdemo-$$-h$n" 2> /dev/null || true; done
    ip link del "azdbr$$" 2> /dev/null || true
  fi
  rm -rf "$state"
}
trap cleanup EXIT
step() {  # prints the command as a user would type it, runs it, times it
  printf '\n%s$ %s%s\n' "$bold" "$*" "$off"
  local start end rc=0
  start=$(date +%s%N)
  "$@" || rc=$?
  end=$(date +%s%N)
  printf '%s(exit status %d, %d ms)%s\n' "$dim" "$rc" $(((end - start) / 1000000)) "$off"
  return "$rc"
}
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() {  # FILE NEEDLE WHAT
  for _ in $(seq 1200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "region-demo: $3 did not start:" >&2
  tail -20 "$1" "${1%.out}.log" 2>/dev/null >&2
  exit 1
}

# 1. The region's store: one etcd member on loopback.
client=$(free_port) peer=$(free_port)
/usr/bin/etcd --name region --data-dir "$state/etcd" --listen-client-urls "http://127.0.0.1:$client" \
  --advertise-client-urls "http://127.0.0.1:$client" --listen-peer-urls "http://127.0.0.1:$peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "region=http://127.0.0.1:$peer" \
  --auto-compaction-mode periodic --auto-compaction-retention 1h > "$state/etcd.out" 2>&1 &
pids+=($!)
wait_for "$state/etcd.out" "ready to serve client requests" etcd
echo "region-demo: etcd (the region's store) on 127.0.0.1:$client"

# 2. The hosts: each its own controller, launcher, cards and state; a control-plane
#    certificate of each host's CA for the region. On a fabric: each in its namespace,
#    192.168.222.N on the underlay bridge.
if ((fabric)); then
  ip link add "azdbr$$" type bridge
  ip link set "azdbr$$" up
fi
for n in $(seq "$hosts"); do
  h="$state/h$n"
  mkdir -p "$h"
  in_ns=() underlay=()
  if ((fabric)); then
    ns="azdemo-$$-h$n"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "azd$$h$n" type veth peer name ul0 netns "$ns"
    ip link set "azd$$h$n" master "azdbr$$" up
    ip -n "$ns" addr add "192.168.222.$n/24" dev ul0
    ip -n "$ns" link set ul0 up
    in_ns=(nsenter "--net=/var/run/netns/$ns")
    underlay=(--underlay "192.168.222.$n:6081")
  fi
  "${in_ns[@]}" "$build/bin/azote-controller" --state-dir "$h" --on-exit stop --capacity-vcpus 8 --capacity-memory 8G \
    "${underlay[@]}" > "$h/controller.out" 2> "$h/controller.log" &
  pids+=($!)
  wait_for "$h/controller.out" ready "the controller of host h$n"
  "$build/bin/azote" admin issue-cert --state-dir "$h" --role control-plane --name region --out "$h/region-creds" > /dev/null
  step "$build/bin/azote-region" register-host --state-dir "$state/region" --etcd "127.0.0.1:$client" --host-id "h$n" \
    --endpoint "unix:$h/api.sock" --credentials "$h/region-creds" --zone "us-east-1$(printf "\\x$(printf %x $((96 + n)))")" \
    --vcpus 8 --memory-mib 8192 "${underlay[@]}"
done

# 3. The region, and a principal for the aws CLI.
port=$(free_port)
"$build/bin/azote-region" add-principal --state-dir "$state/region" --name demo > "$state/demo-keys.json"
"$build/bin/azote-region" serve --state-dir "$state/region" --etcd "127.0.0.1:$client" --listen "127.0.0.1:$port" \
  > "$state/region.out" 2> "$state/region.log" &
pids+=($!)
wait_for "$state/region.out" "azote-region: ready" azote-region
cat "$state/region.out"
key=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["AccessKeyId"])' "$state/demo-keys.json")
secret=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["SecretAccessKey"])' "$state/demo-keys.json")
mkdir -p "$state/aws"
printf '[profile azote]\nregion = us-east-1\noutput = table\n' > "$state/aws/config"
printf '[azote]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$key" "$secret" > "$state/aws/credentials"
chmod 600 "$state/aws/credentials"
# The region's CA through AWS_CA_BUNDLE: Debian's botocore takes the system bundle over a
# profile's ca_bundle.
export AWS_CONFIG_FILE="$state/aws/config" AWS_SHARED_CREDENTIALS_FILE="$state/aws/credentials" AWS_PROFILE=azote \
  AWS_PAGER="" AWS_CA_BUNDLE="$state/region/pki/ca.crt"
echo "region-demo: an aws profile 'azote' in $state/aws; AWS_CA_BUNDLE=$state/region/pki/ca.crt (the region's CA)"
aws() { /usr/bin/aws --endpoint-url "https://127.0.0.1:$port" "$@"; }

# 4. The story, with the real aws CLI.
step aws ec2 describe-regions
step aws ec2 describe-availability-zones
step aws ec2 describe-images --image-ids ami-builtin
count=$((hosts * 2))
out=$(step aws ec2 run-instances --image-id ami-builtin --instance-type t3.nano --count "$count" \
        --tag-specifications 'ResourceType=instance,Tags=[{Key=Name,Value=demo}]' --output json 2>&1) || { echo "$out"; exit 1; }
echo "$out" | grep -E '"InstanceId"|"ReservationId"|exit status'
mapfile -t ids < <(grep -o 'i-[0-9a-f]\{17\}' <<<"$out" | sort -u)
step aws ec2 wait instance-running --instance-ids "${ids[@]}"
step aws ec2 describe-instances --filters Name=tag:Name,Values=demo \
  --query 'Reservations[].Instances[].[InstanceId,State.Name,Placement.AvailabilityZone,LaunchTime]'
for _ in $(seq 50); do
  aws ec2 get-console-output --instance-id "${ids[0]}" --output text 2>/dev/null | grep -q 'azote-guest: ready' && break
  sleep 0.1
done
step aws ec2 get-console-output --instance-id "${ids[0]}" --output text
step aws ec2 terminate-instances --instance-ids "${ids[@]}" --query 'TerminatingInstances[].[InstanceId,CurrentState.Name]'
step aws ec2 wait instance-terminated --instance-ids "${ids[@]}"

# 5. Across hosts: an echo guest on h1 (us-east-1a), a pinger on h2 (us-east-1b), each in
#    its zone's default subnet of the default VPC, a group that lets ICMP in from the VPC.
if ((fabric)); then
  echo
  echo "region-demo: two instances on two hosts, one VPC: the region told each host's fabric process where the other lives"
  register() {  # HOST CMDLINE -> the image id (the same on every host: content-addressed)
    "$build/bin/azote" admin issue-cert --state-dir "$state/h$1" --role control-plane --name demo --out "$state/h$1/demo-creds" > /dev/null 2>&1 || true
    "$build/bin/azote" --endpoint "unix:$state/h$1/api.sock" --credentials "$state/h$1/demo-creds" register-image \
      --name "guest-$RANDOM" --kernel "$build/bin/azote-guest.elf" --cmdline "$2" --output json |
      /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])'
  }
  subnet_of() { aws ec2 describe-subnets --filters "Name=availability-zone,Values=$1" Name=default-for-az,Values=true \
                  --query 'Subnets[0].SubnetId' --output text; }
  console_has() {  # INSTANCE NEEDLE: waits up to 2 minutes
    for _ in $(seq 240); do
      aws ec2 get-console-output --instance-id "$1" --output text 2> /dev/null | grep -q "$2" && return 0
      sleep 0.5
    done
    return 1
  }
  sg=$(aws ec2 create-security-group --group-name pingable --description "ICMP from the VPC" --query GroupId --output text)
  step aws ec2 authorize-security-group-ingress --group-id "$sg" \
    --ip-permissions 'IpProtocol=icmp,FromPort=-1,ToPort=-1,IpRanges=[{CidrIp=172.31.0.0/16}]' --output text > /dev/null
  read -r echo_id echo_ip < <(aws ec2 run-instances --image-id "$(register 1 azote.run=net-echo)" --instance-type t3.nano \
    --subnet-id "$(subnet_of us-east-1a)" --security-group-ids "$sg" \
    --query 'Instances[0].[InstanceId,PrivateIpAddress]' --output text)
  echo "region-demo: echo guest $echo_id at $echo_ip on h1"
  console_has "$echo_id" "net-echo ready" || { echo "region-demo: the echo guest did not start" >&2; exit 1; }
  step aws ec2 run-instances --image-id "$(register 2 "azote.run=net-ping $echo_ip 5")" --instance-type t3.nano \
    --subnet-id "$(subnet_of us-east-1b)" --security-group-ids "$sg" \
    --query 'Instances[0].[InstanceId,PrivateIpAddress,Placement.AvailabilityZone]' --output text | tee "$state/pinger"
  ping_id=$(grep -o '^i-[0-9a-f]\{17\}' "$state/pinger" | head -1)
  console_has "$ping_id" "net-ping $echo_ip sent=" || {
    echo "region-demo: the pinger did not finish; its console:" >&2
    aws ec2 get-console-output --instance-id "$ping_id" --output text >&2
    exit 1
  }
  printf '\n%s$ aws ec2 get-console-output --instance-id %s --output text | grep net-ping%s\n' "$bold" "$ping_id" "$off"
  aws ec2 get-console-output --instance-id "$ping_id" --output text | grep 'net-ping'
  aws ec2 get-console-output --instance-id "$ping_id" --output text | grep -q "net-ping $echo_ip sent=5 received=[1-9]" ||
    { echo "region-demo: no reply crossed the fabric" >&2; exit 1; }
  step aws ec2 terminate-instances --instance-ids "$echo_id" "$ping_id" --query 'TerminatingInstances[].[InstanceId,CurrentState.Name]'
fi
step "$build/bin/azote" audit verify "$state/region/audit/audit.log"
echo
echo "region-demo: done; stopping the region, the hosts and etcd."

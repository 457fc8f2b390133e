#!/usr/bin/env bash
# The controller's launch benchmark: a fresh azote-controller (state in a temp dir),
# a control-plane certificate, then azote-launch-bench — N launches of the built-in
# image one at a time (RunInstances → running, p50/p99), one burst of M, and the
# controller's RSS after those instance records.
#
#   bench/controller/run.sh BUILD_DIR [N] [M]      writes bench/results/controller.json
#   CONTROLLER_ARGS="--log-level debug" KEEP_LOG=FILE bench/controller/run.sh ...
#                                                   the controller's log kept: each launch's timings
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(cd "${1:-build}" && pwd)
n=${2:-100}
m=${3:-10}
out=$repo/bench/results/controller.json
state=$(mktemp -d /tmp/azb.XXXXXX)
log() { printf 'bench-controller: %s\n' "$*" >&2; }
ctl_pid=
cleanup() {
  [[ -n $ctl_pid ]] && kill "$ctl_pid" 2>/dev/null && wait "$ctl_pid" 2>/dev/null || true
  [[ -n ${KEEP_LOG:-} ]] && cp "$state/controller.err" "$KEEP_LOG"
  rm -rf "$state"
}
trap cleanup EXIT

# shellcheck disable=SC2086  # CONTROLLER_ARGS: extra flags, e.g. "--log-level debug" (per-launch timings)
"$build/bin/azote-controller" --state-dir "$state" --on-exit stop --capacity-vcpus 256 --capacity-memory 64G ${CONTROLLER_ARGS:-} \
  > "$state/controller.out" 2> "$state/controller.err" &
ctl_pid=$!
for _ in $(seq 200); do grep -q ready "$state/controller.out" 2>/dev/null && break; sleep 0.05; done
grep -q ready "$state/controller.out" || { log "the controller did not start"; cat "$state/controller.err" >&2; exit 1; }
"$build/bin/azote" admin issue-cert --state-dir "$state" --role control-plane --name bench --out "$state/creds" >/dev/null

log "$n launches one at a time, then a burst of $m (built-in image, t3.nano)"
"$build/bin/azote-launch-bench" --endpoint "unix:$state/api.sock" --credentials "$state/creds" \
  --controller-pid "$ctl_pid" --launches "$n" --burst "$m" > "$state/result.json"
python3 - "$state/result.json" "$out" <<'PY'
import json, sys, os, datetime
r = json.load(open(sys.argv[1]))
r["date"] = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
r["load_average"] = os.getloadavg()[0]
r["command"] = "bench/controller/run.sh build %d %d" % (r["launches"], r["burst"])
json.dump(r, open(sys.argv[2], "w"), indent=2)
print(json.dumps(r, indent=2))
PY

#!/usr/bin/env bash
# The enclave story on one local azote host (issue 12), as a user would type it:
#   1. azote-controller with enclaves' parents reaching the host's KMS socket, azote-kms
#      trusting azote-rot's root (the host's attestation root);
#   2. an enclave image of the built-in guest (enclave-kms-server) built, its PCR0 printed;
#   3. a key whose policy allows Decrypt to that PCR0 only, a secret sealed under it;
#   4. a parent instance with enclave support that relays its enclave's KMS traffic (bytes
#      only) and asks it to open the sealed secret; the enclave, from its NSM, attests and
#      gets the secret through the parent, and answers its SHA-256;
#   5. the same with an image changed by one byte (refused), and in debug mode (refused);
#   6. azote-kms's audit log verified.
#   scripts/enclave-demo.sh [BUILD_DIR]          (as root: the controller's launcher is)
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
command -v openssl > /dev/null || { echo "enclave-demo: needs openssl (a release key)" >&2; exit 1; }
for b in azote-controller azote azote-hv azote-card-nsm azote-card-vsock azote-kms azote-rot azote-guest.elf; do
  [[ -e "$build/bin/$b" ]] || { echo "enclave-demo: $build/bin/$b is missing; run 'make' first" >&2; exit 1; }
done
[[ -r /dev/kvm && -w /dev/kvm ]] || { echo "enclave-demo: /dev/kvm is not usable by $(id -un)" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "enclave-demo: run as root (azote-controller starts its launcher)" >&2; exit 1; }
if [[ -t 1 ]]; then bold=$'\033[1m' dim=$'\033[2m' off=$'\033[0m'; else bold='' dim='' off=''; fi
state=$(mktemp -d /tmp/azote-enclave-demo.XXXXXX)
ctl= kms= rel=
cleanup() {
  for p in $kms $ctl; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  rm -rf "$state" "${rel:-}"
}
trap cleanup EXIT
say() { printf '\n%s# %s%s\n' "$bold" "$*" "$off"; }
step() {  # the command as a user types it (on stderr: its output may be captured), then its output
  printf '%s$ %s%s\n' "$bold" "${*//$build\/bin\//}" "$off" >&2
  "$@"
}
az="$build/bin/azote"

say "1. a host under a signed release (in development mode every PCR reads zero and no key policy could match)"
rel=$(mktemp -d /tmp/azote-enclave-demo-release.XXXXXX)
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$rel/key.pem" 2>/dev/null
openssl pkey -in "$rel/key.pem" -pubout -out "$rel/key.pub"
step "$az" admin sign-release --key "$rel/key.pem" --bin-dir "$build/bin" --release enclave-demo --out "$rel/manifest.json"
echo "azote-controller: its launcher, azote-rot, enclave parents reaching <state>/host/kms.sock as vsock CID 2 port 8000"
"$build/bin/azote-controller" --state-dir "$state" --on-exit stop --enclave-host-port 8000=kms.sock \
  --release-manifest "$rel/manifest.json" --release-key "$rel/key.pub" \
  > "$state/controller.out" 2> "$state/controller.log" &
ctl=$!
for _ in $(seq 200); do grep -q ready "$state/controller.out" 2>/dev/null && break; sleep 0.05; done
grep -q ready "$state/controller.out" || { cat "$state/controller.log" >&2; exit 1; }
export AZOTE_ENDPOINT="unix:$state/api.sock" AZOTE_CREDENTIALS="$state/creds"
"$az" admin issue-cert --state-dir "$state" --role control-plane --name demo --out "$state/creds" > /dev/null
"$az" describe-host-attestation --output json |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["certificate_pem"], end="")' > "$state/root.pem"
echo "the host's attestation root: $state/root.pem"
# azote-kms on a socket any parent's vsock card may reach (0666 in <state>/host, 0711):
# the attestation document is the credential, not the caller.
/usr/bin/python3 - "$state" "$build/bin/azote-kms" <<'EOF' &
import os, socket, sys
state, kms = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.bind(state + "/host/kms.sock")
os.chmod(state + "/host/kms.sock", 0o666)
s.listen(16)
os.set_inheritable(s.fileno(), True)
os.execv(kms, [kms, "--state-dir", state + "/kms", "--root", state + "/root.pem", "--listen",
               "fd:%d" % s.fileno(), "--audit", state + "/kms-audit"])
EOF
kms=$!
for _ in $(seq 100); do [[ -S $state/host/kms.sock ]] && break; sleep 0.05; done
sleep 0.5
echo "azote-kms: pid $kms, trusting that root"

say "2. the enclave image: the built-in guest's enclave-kms-server"
printf 'bootstrap' > "$state/boot.cpio"; printf 'application' > "$state/app.cpio"
step "$az" enclave build-enclave --kernel "$build/bin/azote-guest.elf" --initrd "$state/boot.cpio" \
  --initrd "$state/app.cpio" --cmdline "azote.run=enclave-kms-server 5000" --output-file "$state/server.eif" \
  2>/dev/null | tee "$state/measurements.json"
pcr0=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Measurements"]["PCR0"])' "$state/measurements.json")

say "3. a key for that image only, and the data owner's secret sealed under it"
cat > "$state/policy.json" <<EOF
{"Statement": [{"Effect": "Allow", "Action": ["kms:Decrypt"],
  "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": "$pcr0"}}}]}
EOF
key=$(step "$build/bin/azote-kms" create-key --state-dir "$state/kms" --policy "$state/policy.json")
echo "$key"
secret="the enclave alone may read this"
printf '%s' "$secret" > "$state/secret"
blob=$(step "$build/bin/azote-kms" encrypt --state-dir "$state/kms" --key-id "$key" --plaintext-file "$state/secret")
echo "CiphertextBlob: ${blob:0:40}..."
echo "the secret's SHA-256: $(printf '%s' "$secret" | sha256sum | cut -d' ' -f1)"

# A parent relaying for its enclave (CID $2) and asking it to open the blob; the enclave
# from $1 (extra run-enclave flags after); prints the parent's line with the answer.
ask() {
  local eif=$1 cid=$2; shift 2
  local image parent
  image=$("$az" register-image --name "parent-$cid" --kernel "$build/bin/azote-guest.elf" \
    --cmdline "azote.run=kms-parent 8000 8000 $cid 5000 $blob" --output json |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])')
  parent=$("$az" run-instances --image-id "$image" --instance-type t3.micro --no-network-interface \
    --enclave-options Enabled=true --wait --output json |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["instances"][0]["instance_id"])')
  echo "parent $parent (kms-parent: a proxy on vsock port 8000 to the host's port 8000)"
  step "$az" enclave run-enclave --instance-id "$parent" --eif-path "$eif" --cpu-count 1 --memory 128 \
    --enclave-cid "$cid" "$@"
  for _ in $(seq 600); do
    "$az" get-console-output --instance-id "$parent" | grep -q 'enclave-ask ' && break
    sleep 0.1
  done
  printf '%s$ azote get-console-output --instance-id %s | grep enclave-ask%s\n' "$bold" "$parent" "$off"
  "$az" get-console-output --instance-id "$parent" | grep 'enclave-ask ' || echo "(no answer)"
  "$az" terminate-instances --instance-ids "$parent" > /dev/null
}

say "4. the parent relays, the enclave attests and opens the secret: its SHA-256 comes back"
ask "$state/server.eif" 20

say "5a. the same image changed by one byte (its command line): a new PCR0, refused"
"$az" enclave build-enclave --kernel "$build/bin/azote-guest.elf" --initrd "$state/boot.cpio" \
  --initrd "$state/app.cpio" --cmdline "azote.run=enclave-kms-server 5000 " --output-file "$state/tampered.eif" >/dev/null 2>&1
ask "$state/tampered.eif" 21
say "5b. the right image in debug mode: its document's PCRs are zeros, refused"
ask "$state/server.eif" 22 --debug-mode

say "6. every decision of azote-kms, in its signed audit log"
/usr/bin/python3 -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r.get("method", "").startswith("kms.Decrypt"):
        print(r.get("outcome"), r.get("error", "") or "", (r.get("detail") or {}).get("module_id", ""))
' "$state/kms-audit/audit.log" || true
step "$az" audit verify "$state/kms-audit/audit.log"

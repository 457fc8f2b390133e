#!/usr/bin/env bash
# Installs the Debian packages azote needs. Idempotent: a quiet no-op when all are present.
set -euo pipefail
packages=(
  cmake ninja-build g++ make pkg-config
  libgtest-dev googletest          # unit and integration tests
  nlohmann-json3-dev               # --config FILE.json
  libssl-dev                       # AES-XTS in azote-card-blk; reference SHA-256 in tests
  liburing-dev                     # io_uring in azote-card-blk
  clang libclang-rt-14-dev         # libFuzzer targets
  qemu-system-x86                  # interop test and benchmark peer (qemu-system-x86_64 -M microvm)
  lz4 binutils dpkg apt            # extracting the Debian cloud kernel for the Linux boot test
  fio                              # block benchmark peer (raw io_uring on the same file)
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler  # controller API (gRPC, mTLS)
  etcd-server etcd-client golang-etcd-server-dev  # lib/etcd: etcd members for its tests (etcd, etcdctl) and the v3 API .proto files it compiles
  libsqlite3-dev                   # controller state
  libseccomp-dev                   # lib/sandbox: seccomp allowlists per thread class
  libcbor-dev                      # lib/attest: CBOR of attestation documents (COSE_Sign1)
  libbearssl-dev                   # guest/crypto.cpp: BearSSL's static archive linked into the built-in guest (enclave crypto)
  zlib1g-dev                       # lib/eif: the CRC-32 of Enclave Image Files (zlib's crc32)
  libtpms-dev                      # azote-card-tpm: the instances' TPM 2.0 (libtpms)
  tpm2-tools libtss2-dev socat     # card_tpm_test: tpm2-tools through the cmd TCTI (socat) as the TPM's clients
  swtpm swtpm-tools                # a reference TPM (swtpm's unixio channel is the card's data protocol)
  libbpf-dev                       # lib/guard: loading the write guard's BPF LSM programs (clang compiles them)
  python3-cbor2 python3-cryptography  # tests/tools/verify_attestation.py: the independent document verifier
  openssl                          # test fixtures: certificates signed by a foreign CA
  libldns-dev                      # lib/net: ldns, the independent DNS reference its tests and fuzz_dns check against
  libmicrohttpd-dev                # lib/imds: the HTTP server of the instance metadata service
  libcurl4-openssl-dev             # azote-controller --join: enrolling with azote-region over HTTPS
  curl iproute2 iputils-ping ethtool  # IMDS and namespace tests (curl, ip, ping); bench/net (ethtool: offloads off)
  udhcpc bind9-dnsutils iperf3 netcat-openbsd iproute2  # card_net_ns_test: udhcpc, dig, iperf3, nc in namespaces via azote-tap-bridge
  python3-botocore                 # lib/sigv4: botocore (the aws CLI's signer) signs the requests sigv4_test verifies
  libpugixml-dev python3-boto3 awscli  # lib/ec2api: pugixml for EC2's XML responses; its tests check them against the real clients (botocore, /usr/bin/aws)
)
missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"

// Programs that live in their own translation unit.
#pragma once

#include "platform.hpp"

namespace az {

// Every line the guest prints starts with this.
inline constexpr const char* kPrefix = "azote-guest: ";

// Prints "azote-guest: PROG: WHAT 'ARG'" and exits 126 (bad program arguments). (main.cpp)
[[noreturn]] void usage_error(const char* prog, const char* what, Str arg);

// `smp [x2apic]`: start every CPU the firmware lists (INIT-SIPI-SIPI), each prints
// "cpu K online" from user mode; exit 0 when all did, 1 on timeout. `x2apic`
// first switches the BSP's local APIC to x2APIC mode (IPIs through MSRs).
[[noreturn]] void prog_smp(const Args& args);

// `blk-check [MIB]`: write a per-run pattern over the virtio-blk disk (or its first
// MIB MiB), flush, read back and verify. Exit 0 (ok), 1 (mismatch, I/O error), 2
// (no device). `blk-bench [QD] [SECONDS] [QUEUES]`: random 4 KiB and sequential
// 1 MiB reads and writes at queue depth QD, one line per test. (blk_programs.cpp)
[[noreturn]] void prog_blk_check(const Args& args);
[[noreturn]] void prog_blk_bench(const Args& args);
// `blk-fua [MIB]`: switch the device to write-through (VIRTIO_BLK_F_CONFIG_WCE,
// writeback = 0), read it back ("blk write-through on"), write the blk-check pattern
// over the first MIB MiB (default 4) with no FLUSH, read back and verify. Exit 0, 1
// (mismatch, I/O error, no CONFIG_WCE, mode refused, read-only), 2 (no device).
[[noreturn]] void prog_blk_fua(const Args& args);

// `blk-hostile`: submit a read whose data buffer is outside guest RAM, wait until the
// device reports DEVICE_NEEDS_RESET ("blk device needs reset"), reset and set up the
// device again, then write and read back 4 KiB: "blk-hostile recovered", exit 0. Exit
// 1 if the device completes the bad read, never reports NEEDS_RESET (30 s) or the round
// trip fails; 2 without a device.
[[noreturn]] void prog_blk_hostile(const Args& args);

// `init [--no-idle] [--marker]`: an instance's program. Hello line, boot count on the
// root volume (the first virtio-blk device; record format in init.cpp), `ready`, then
// parks the CPU in HLT for good (--no-idle: exit 0). I/O errors print one line
// and init goes on. --marker (the confinement tests): first 64 random bytes kept in
// private memory and printed in hex, and a DHCP lease over the ENI after the boot
// count. (init.cpp)
[[noreturn]] void prog_init(const Args& args);

// The network programs (net_programs.cpp), over the user-mode virtio-net driver and
// the inet stack; each takes a DHCP lease first and prints it ("WHO ip=A/PREFIX
// router=R dns=D mtu=M hostname=H lease=S"). Exit 2 without a virtio-net device, 1
// when DHCP times out (30 s). `net-dhcp`: the lease, exit 0. `net-ping ADDR [COUNT]`:
// one echo request per second, a line per reply and a summary; exit 0 if any reply
// came. `net-echo [PORT]`: UDP echo server on PORT (7), forever. `net-bench ADDR
// [PORT] [SECONDS] [SIZE]`: UDP datagrams to an echo server, one line with the rates
// sent and received; exit 0 if any came back.
[[noreturn]] void prog_net_dhcp(const Args& args);
// A DHCP lease over the first virtio-net device, its lines printed as net-dhcp prints
// them; false (after a line saying why) without a device or a lease. For init.
bool net_lease(const char* who);
[[noreturn]] void prog_net_ping(const Args& args);
[[noreturn]] void prog_net_echo(const Args& args);
[[noreturn]] void prog_net_bench(const Args& args);

// `tpm-pcrs`: PCRs 0-23 of every allocated sha1/sha256/sha384 bank of the TPM 2.0
// CRB at 0xfed40000 (or the ACPI TPM2 table's), read in user mode: one
// "tpm-pcr BANK INDEX HEX" line each, then "tpm-pcrs ok banks=... pcrs=N". Exit 0; 1
// on a TPM or interface error ("tpm-pcrs error: ..."); 2 without a TPM ("tpm-pcrs no
// TPM at 0x..."). (tpm_programs.cpp)
[[noreturn]] void prog_tpm_pcrs(const Args& args);
// `attest NONCE_HEX [USER_DATA_HEX]`: the instance's attestation document from the TPM
// card (vendor command TPM_CC_AZOTE_ATTEST, 2 KiB chunks, at most 16 KiB), printed as
// one "attestation-document <base64>" line. Exit 0; 1 on bad arguments ("attest: ...",
// nothing sent) or a TPM error ("attest error: ..."); 2 without a TPM ("attest no TPM
// at 0x..."). (tpm_programs.cpp)
[[noreturn]] void prog_attest(const Args& args);

// The NSM programs (nsm_programs.cpp), over the user-mode virtio-nsm driver (device 33,
// ENCLAVES.md §3): one API request per call, 10 s at most each. Exit 2 without a device
// ("PROG no NSM device"), 1 on device trouble, an {"Error": NAME} answer or a malformed
// response ("PROG error: ..."), 126 on bad arguments. `nsm-describe`: the raw response
// ("nsm-response <base64>") and "nsm-describe module_id=... version=... max_pcrs=N
// locked=... digest=... us=U". `nsm-pcrs [N]`: DescribePCR of 0..N-1 (32), one
// "nsm-pcr INDEX locked=0|1 HEX" line each. `nsm-extend INDEX DATA_HEX`: "nsm-extend
// INDEX HEX" (the new value). `nsm-lock INDEX`, `nsm-lock-range RANGE`: "PROG ok".
// `nsm-attest [--park] NONCE_HEX [USER_DATA_HEX [PUBLIC_KEY_HEX]]` ("-" or absent: null,
// each at most 1024 bytes): "nsm-attestation-document <base64>" (--park: the CPU then
// parks, an enclave that stays up). `nsm-random`: "nsm-random bytes=N HEX".
// `nsm-raw REQUEST_HEX`: any 1-16384 bytes as the request, the response
// printed as "nsm-response <base64>" and never parsed; exit 0 once one came.
[[noreturn]] void prog_nsm_describe(const Args& args);
[[noreturn]] void prog_nsm_pcrs(const Args& args);
[[noreturn]] void prog_nsm_extend(const Args& args);
[[noreturn]] void prog_nsm_lock(const Args& args);
[[noreturn]] void prog_nsm_lock_range(const Args& args);
[[noreturn]] void prog_nsm_attest(const Args& args);
[[noreturn]] void prog_nsm_random(const Args& args);
[[noreturn]] void prog_nsm_raw(const Args& args);
// `nsm-bench [SECONDS]`: Attestation requests, then DescribePCR, SECONDS each (default 2):
// "nsm-bench attestations=N attest_per_s=R attest_us_avg=... describe_pcr_per_s=...".
[[noreturn]] void prog_nsm_bench(const Args& args);

// The vsock programs (vsock_programs.cpp), over the user-mode virtio-vsock driver
// (device 19) and its stream sockets (vsock.hpp). Exit 2 without a device ("PROG no
// vsock device"), 1 on an error ("PROG error: ..."), 126 on bad arguments. `vsock-cid`:
// "vsock cid=N". `vsock-echo PORT [COUNT]`: "vsock-echo ready cid=N port=P", then echoes
// every connection until the peer shuts down, "vsock-echo peer=CID:PORT bytes=N" each;
// exit 0 after COUNT of them (default: never). `vsock-send CID PORT TEXT [REPEAT]`:
// streams TEXT REPEAT times, compares the echo, "vsock-send echoed bytes=N rtt_us=R".
// `vsock-bench CID PORT SECONDS [SIZE]`: round trips, then a stream, against an echo
// server: "vsock-bench bytes=N mbps=M rtt_us_p50=...". `vsock-heartbeat`: the enclave
// side of nitro-cli's boot handshake (0xB7 to CID 3 port 9000 and back): "vsock-heartbeat
// ok". `vsock-heartbeat-server [COUNT]`: the parent side, "vsock-heartbeat from cid=N"
// per connection; exit 0 after COUNT if every one was right, else 1.
[[noreturn]] void prog_vsock_cid(const Args& args);
[[noreturn]] void prog_vsock_echo(const Args& args);
[[noreturn]] void prog_vsock_send(const Args& args);
[[noreturn]] void prog_vsock_bench(const Args& args);
[[noreturn]] void prog_vsock_heartbeat(const Args& args);
[[noreturn]] void prog_vsock_heartbeat_server(const Args& args);

// `crypto-selftest [SEED_HEX|- [CIPHERTEXT_HEX]]` (crypto_programs.cpp, built with
// BearSSL only): SHA-256, AES-256-GCM and RSA-OAEP-SHA256 known answers, an RSA-2048
// key from an HMAC-DRBG seeded with SEED_HEX (16-256 bytes: a reproducible key), else
// RDRAND, else a fixed test seed; "crypto-selftest public-key <base64 DER SPKI>", an
// OAEP round trip with it, CIPHERTEXT_HEX (OAEP-SHA256 to that key) decrypted
// ("crypto-selftest decrypted HEX"), then "crypto-selftest ok keygen_ms=N". Exit 0; 1
// on a failed check ("crypto-selftest error: ..."); 126 on bad arguments.
[[noreturn]] void prog_crypto_selftest(const Args& args);

// The enclave demo (enclave_programs.cpp, built with BearSSL only; ENCLAVES.md §5-§7).
// `enclave-kms-server PORT`: the enclave. Seeds an HMAC-DRBG from two NSM GetRandom
// answers, makes an RSA-2048 key, "enclave-kms-server ready port=P", then per connection
// from the parent (CID 3) one "DECRYPT <b64>\n" (<= 8 KiB): an NSM attestation document
// (a fresh 32-byte nonce, the key's DER SPKI), azote-kms's Decrypt through the parent's
// proxy at (3, 8000), the CiphertextForRecipient decrypted, and "RESULT sha256=<hex>
// bytes=<n>\n" or "ERROR <reason>\n" back (the plaintext never leaves); "enclave-kms-server
// answered ok|error ..." per request. Serves forever; exit 2 without an NSM or vsock
// device, 1 on device failure. `kms-proxy PORT HOST_PORT`: the parent's proxy, each
// enclave connection on PORT relayed byte for byte to (2, HOST_PORT), "kms-proxy relayed
// peer=CID:PORT up=N down=M" each; forever. `enclave-ask CID PORT CIPHERTEXT_B64`: one
// DECRYPT, "enclave-ask <the answer line>"; exit 0 on RESULT, 1 otherwise. `kms-parent
// PORT HOST_PORT ENCLAVE_CID ENCLAVE_PORT CIPHERTEXT_B64`: the proxy and the ask in one
// poll loop (the connect retried every 200 ms for 60 s), then proxies forever.
[[noreturn]] void prog_enclave_kms_server(const Args& args);
[[noreturn]] void prog_kms_proxy(const Args& args);
[[noreturn]] void prog_enclave_ask(const Args& args);
[[noreturn]] void prog_kms_parent(const Args& args);

}  // namespace az

// azote-guest user-mode entry points and the simple programs. The CPL0 boot code
// (boot.S) irets here at CPL3 with IOPL=3.
#include <cstddef>
#include <cstdint>

#include "platform.hpp"
#include "programs.hpp"
#include "rt.hpp"
#include "sha256/cpu_stream.hpp"
#include "sha256/sha256.hpp"

extern "C" char __bss_start[], __bss_end[];

namespace az {
[[noreturn]] void usage_error(const char* prog, const char* what, Str arg) {
  Line l;
  l.s(kPrefix).s(prog).s(": ").s(what);
  if (!arg.empty()) l.s(" '").s(arg).s("'");
  l.print();
  exit(126);
}

namespace {

[[noreturn]] void prog_hello() {
  const uint64_t mib = (platform::ram_bytes() + (1ull << 20) - 1) >> 20;
  Line().s(kPrefix).s("hello vcpus=").u(platform::cpus().count).s(" memory=").u(mib).s("MiB").print();
  exit(0);
}

[[noreturn]] void prog_exit(const Args& a) {
  uint64_t code = 0;
  if (a.argc < 1) usage_error("exit", "missing status (want 0-255)", Str{});
  if (!parse_u64(a.argv[0], 255, &code)) usage_error("exit", "bad status (want 0-255):", a.argv[0]);
  exit(static_cast<int>(code));
}

// "print COUNT": COUNT numbered lines, then exit 0 (a guest that floods its console).
[[noreturn]] void prog_print(const Args& a) {
  uint64_t count = 0;
  constexpr uint64_t kMax = 1'000'000;
  if (a.argc < 1) usage_error("print", "missing line count (want 0-1000000)", Str{});
  if (!parse_u64(a.argv[0], kMax, &count)) usage_error("print", "bad line count (want 0-1000000):", a.argv[0]);
  for (uint64_t i = 1; i <= count; ++i) Line().s(kPrefix).s("line ").u(i).print();
  exit(0);
}

[[noreturn]] void prog_cpu(const Args& a) {
  uint64_t mib = 0;
  constexpr uint64_t kMaxMib = 1ull << 20;
  if (a.argc < 1) usage_error("cpu", "missing MiB count (want 0-1048576)", Str{});
  if (!parse_u64(a.argv[0], kMaxMib, &mib)) usage_error("cpu", "bad MiB count (want 0-1048576):", a.argv[0]);
  const uint64_t buf_addr = platform::alloc(azote::cpu_stream::kBufferBytes, 4096, 1ull << 20, 1ull << 32);
  if (buf_addr == 0) {
    Line().s(kPrefix).s("cpu: no free 1 MiB of RAM for the buffer").print();
    exit(1);
  }
  auto* buf = phys<uint8_t>(buf_addr);
  azote::cpu_stream::fill(buf);
  uint8_t digest[azote::Sha256::kDigestBytes];
  const uint64_t t0 = rdtsc();
  azote::cpu_stream::hash(buf, mib, digest);
  const uint64_t cycles = rdtsc() - t0;
  Line l;
  l.s(kPrefix).s("cpu mib=").u(mib).s(" sha256=");
  for (uint8_t b : digest) l.hex2(b);
  l.s(" cycles=").u(cycles).print();
  exit(0);
}

[[noreturn]] void prog_fault(const Args& a) {
  const Str kind = a.argc > 0 ? a.argv[0] : Str{};
  if (kind == "triple") {
    triple_fault();
    Line().s(kPrefix).s("fault triple: the CPU survived a triple fault").print();
    exit(1);
  }
  if (kind == "ud") {
    asm volatile("ud2" ::: "memory");
    exit(1);
  }
  if (kind == "unmapped") {
    *phys<volatile uint32_t>(1ull << 32) = 0x5a5a5a5a;  // beyond the 4 GiB identity map
    exit(1);
  }
  if (kind == "io") {
    asm volatile("outb %0, %1" : : "a"(uint8_t{0x5a}), "d"(uint16_t{0x5a5}) : "memory");
    Line().s(kPrefix).s("fault io: the write to port 0x5a5 was ignored").print();
    exit(1);
  }
  if (kind == "mmio") {
    *phys<volatile uint32_t>(0xd0000000) = 0x5a5a5a5a;
    Line().s(kPrefix).s("fault mmio: the write to 0xd0000000 was ignored").print();
    exit(1);
  }
  usage_error("fault", kind.empty() ? "missing kind (want triple, ud, unmapped, io or mmio)"
                                    : "unknown kind (want triple, ud, unmapped, io or mmio):",
              kind);
}

const char* exception_name(uint64_t v) {
  static constexpr const char* kNames[32] = {
      "#DE", "#DB", "#NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS",
      "#NP", "#SS", "#GP",  "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
      "#22", "#23", "#24",  "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31"};
  return v < 32 ? kNames[v] : "#??";
}

uint32_t g_faulting;  // .bss

}  // namespace
}  // namespace az

using namespace az;

extern "C" [[noreturn]] void azote_user_main(uint64_t start_info) {
  for (char* p = __bss_start; p < __bss_end; ++p) *p = 0;
  platform::init(start_info);
  const Args a = platform::args();
  if (a.name == "hello") prog_hello();
  if (a.name == "exit") prog_exit(a);
  if (a.name == "cpu") prog_cpu(a);
  if (a.name == "print") prog_print(a);
  if (a.name == "fault") prog_fault(a);
  if (a.name == "smp") prog_smp(a);
  if (a.name == "blk-check") prog_blk_check(a);
  if (a.name == "blk-bench") prog_blk_bench(a);
  if (a.name == "blk-fua") prog_blk_fua(a);
  if (a.name == "blk-hostile") prog_blk_hostile(a);
  if (a.name == "init") prog_init(a);
  if (a.name == "net-dhcp") prog_net_dhcp(a);
  if (a.name == "net-ping") prog_net_ping(a);
  if (a.name == "net-echo") prog_net_echo(a);
  if (a.name == "net-bench") prog_net_bench(a);
  if (a.name == "tpm-pcrs") prog_tpm_pcrs(a);
  if (a.name == "attest") prog_attest(a);
  if (a.name == "nsm-describe") prog_nsm_describe(a);
  if (a.name == "nsm-pcrs") prog_nsm_pcrs(a);
  if (a.name == "nsm-extend") prog_nsm_extend(a);
  if (a.name == "nsm-lock") prog_nsm_lock(a);
  if (a.name == "nsm-lock-range") prog_nsm_lock_range(a);
  if (a.name == "nsm-attest") prog_nsm_attest(a);
  if (a.name == "nsm-random") prog_nsm_random(a);
  if (a.name == "nsm-raw") prog_nsm_raw(a);
  if (a.name == "nsm-bench") prog_nsm_bench(a);
  if (a.name == "vsock-cid") prog_vsock_cid(a);
  if (a.name == "vsock-echo") prog_vsock_echo(a);
  if (a.name == "vsock-send") prog_vsock_send(a);
  if (a.name == "vsock-bench") prog_vsock_bench(a);
  if (a.name == "vsock-heartbeat") prog_vsock_heartbeat(a);
  if (a.name == "vsock-heartbeat-server") prog_vsock_heartbeat_server(a);
#ifdef AZOTE_GUEST_BEARSSL
  if (a.name == "crypto-selftest") prog_crypto_selftest(a);
  if (a.name == "enclave-kms-server") prog_enclave_kms_server(a);
  if (a.name == "kms-proxy") prog_kms_proxy(a);
  if (a.name == "enclave-ask") prog_enclave_ask(a);
  if (a.name == "kms-parent") prog_kms_parent(a);
#endif
  Line().s(kPrefix).s("unknown program ").s(a.name).print();
  exit(127);
}

// Every CPU exception lands here at CPL3 (see isr_common in boot.S).
extern "C" [[noreturn]] void azote_user_fault(uint64_t vector, uint64_t rip, uint64_t error_code, uint64_t cs,
                                              uint64_t cr2) {
  (void)error_code;
  // A second fault (while reporting, or on another CPU) ends the guest at once.
  if (__atomic_exchange_n(&g_faulting, 1, __ATOMIC_ACQ_REL) != 0) exit(255);
  Line l;
  l.s(kPrefix).s("exception ").s(exception_name(vector)).s(" (vector ").u(vector).s(") rip=0x").x(rip);
  if (vector == 14) l.s(" cr2=0x").x(cr2);
  if ((cs & 3) == 0) l.s(" (in CPL0)");
  l.print();
  exit(static_cast<int>(128 + vector));
}

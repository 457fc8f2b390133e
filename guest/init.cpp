// `init [--no-idle]`: what an azote instance runs (the controller launches
// builtin:init). It says hello, keeps a boot count on the root volume (the first
// virtio-blk device), prints `ready` and then idles: the CPU parks in HLT at CPL0
// with interrupts off, which KVM's in-kernel irqchip handles without returning to
// azote-hv, so an idle instance costs no host CPU. The instance ends when the host
// stops azote-hv (SIGTERM). `--no-idle` exits 0 after `ready` instead (tests).
//
// Lines, in order:
//   azote-guest: init vcpus=N memory=MMiB
//   azote-guest: virtio-blk at 0x... (the driver's device line, when there is one)
//   one of
//   azote-guest: root volume boot-count=N [serial=SERIAL ]sectors=S
//   azote-guest: root volume read-only, boot-count not recorded
//   azote-guest: no root volume
//   azote-guest: init io-error root volume ...        (any I/O error; init goes on)
//   azote-guest: ready
//
// The boot record: the first 32 bytes of the root volume's first logical block
// (sector 0), little-endian:
//
//   offset  size  field
//        0    12  magic: "AZOTEBOOT" followed by three NUL bytes
//       12     4  version: 1
//       16     8  boot count: boots of init that recorded themselves, >= 1
//       24     8  checksum: FNV-1a 64 (offset basis 0xcbf29ce484222325, prime
//                 0x100000001b3) over bytes 0-23
//
// Any other content of bytes 0-31 (wrong magic, version or checksum: a fresh
// zeroed volume, a torn or foreign sector) is "no record" and the count starts at 1.
// The rest of the block is written back unchanged (read-modify-write), so for
// example an MBR partition table at bytes 446-511 survives. The count saturates at
// 2^64-1. Each boot writes the block, FLUSHes (when the device offers FLUSH; a
// device without it is write-through) and reads it back to compare, so the count
// printed is on stable storage even if the card is killed right afterwards.
#include "blk.hpp"
#include "platform.hpp"
#include "programs.hpp"
#include "rt.hpp"

namespace az {
namespace {

constexpr uint8_t kMagic[12] = {'A', 'Z', 'O', 'T', 'E', 'B', 'O', 'O', 'T', 0, 0, 0};
constexpr uint32_t kRecordVersion = 1;
constexpr size_t kRecordBytes = 32;
constexpr uint32_t kMaxBlock = 65536;  // largest blk_size the driver accepts

constinit blk::Device g_root;
constinit bool g_no_idle = false;

uint64_t fnv1a64(const uint8_t* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t load_le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
void store_le(uint8_t* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// The boot count in `b` (the block's first bytes), or 0 when there is no valid record.
uint64_t record_count(const uint8_t* b) {
  for (size_t i = 0; i < sizeof kMagic; ++i)
    if (b[i] != kMagic[i]) return 0;
  if (load_le(b + 12, 4) != kRecordVersion) return 0;
  if (load_le(b + 24, 8) != fnv1a64(b, 24)) return 0;
  return load_le(b + 16, 8);  // 0 here is "no record" too
}

void put_record(uint8_t* b, uint64_t count) {
  for (size_t i = 0; i < sizeof kMagic; ++i) b[i] = kMagic[i];
  store_le(b + 12, kRecordVersion, 4);
  store_le(b + 16, count, 8);
  store_le(b + 24, fnv1a64(b, 24), 8);
}

const char* status_name(uint8_t s) {
  return s == blk::kStatusIoErr ? "IOERR" : s == blk::kStatusUnsupp ? "UNSUPP" : s == 0xff ? "not written" : "unknown";
}

// Step 3: `ready`, then idle for good (or exit 0 with --no-idle). Also where a fatal
// error of the driver lands (Options::on_fatal), after its io-error line.
[[noreturn]] void ready() {
  Line().s(kPrefix).s("ready").print();
  if (g_no_idle) exit(0);
  // The other CPUs were never started (KVM keeps them waiting for a SIPI); this one
  // goes to `cli; hlt` at CPL0 and stays there.
  park();
}

// One request on slot 0, waited for; its status byte.
uint8_t io(uint32_t type, uint64_t sector, uint64_t buf, uint32_t len) {
  g_root.submit(0, type, sector, buf, len);
  g_root.kick();
  return g_root.wait().status;
}

// "azote-guest: init io-error root volume op=OP sector=S len=L status=N (NAME)"
void report(const char* op, uint64_t sector, uint32_t len, uint8_t st) {
  Line l = g_root.error_line();
  l.s("root volume op=").s(op).s(" sector=").u(sector).s(" len=").u(len).s(" status=").u(st).s(" (").s(
      status_name(st)).s(")");
  l.print();
}

void io_error_line(const char* what) {
  Line l = g_root.error_line();
  l.s("root volume ").s(what).print();
}

// Step 2. Every failure prints one line and returns: init goes on to `ready`.
void root_volume() {
  blk::Options o;
  o.who = "init";
  o.slots = 1;
  o.max_request = kMaxBlock;
  o.queues = 1;
  o.on_fatal = &ready;
  if (g_root.open(o) == blk::Device::Open::kNoDevice) {
    Line().s(kPrefix).s("no root volume").print();
    return;
  }
  if (g_root.read_only()) {
    Line().s(kPrefix).s("root volume read-only, boot-count not recorded").print();
    return;
  }
  const uint32_t bs = g_root.block_size();  // 512..65536, a power of two
  if (g_root.max_request() < bs) {
    Line l = g_root.error_line();
    l.s("root volume request limit ").u(g_root.max_request()).s(" is below its block size ").u(bs).print();
    return;
  }
  if (g_root.capacity() < bs / blk::kSectorBytes) {
    Line l = g_root.error_line();
    l.s("root volume of ").u(g_root.capacity()).s(" sectors holds no ").u(bs).s("-byte block").print();
    return;
  }
  // The block as read and written, the block read back, and the GET_ID buffer.
  const uint64_t mem = platform::alloc_io(2ull * bs + 512, 4096);
  if (mem == 0) {
    io_error_line("no free RAM for the boot record");
    return;
  }
  const uint64_t block = mem, check = mem + bs, id = mem + 2ull * bs;
  uint8_t* const b = phys<uint8_t>(block);
  uint8_t* const c = phys<uint8_t>(check);
  uint8_t* const serial = phys<uint8_t>(id);

  // The serial, if the device answers GET_ID (it may say UNSUPP: then no serial).
  for (uint32_t i = 0; i < 512; ++i) serial[i] = 0;
  const bool have_serial = io(blk::kTypeGetId, 0, id, 512) == blk::kStatusOk && serial[0] != 0;

  if (const uint8_t st = io(blk::kTypeIn, 0, block, bs); st != blk::kStatusOk) return report("read", 0, bs, st);
  const uint64_t old = record_count(b);
  const uint64_t count = old == 0 ? 1 : old == ~0ull ? old : old + 1;
  put_record(b, count);
  if (const uint8_t st = io(blk::kTypeOut, 0, block, bs); st != blk::kStatusOk) return report("write", 0, bs, st);
  if (g_root.can_flush())
    if (const uint8_t st = io(blk::kTypeFlush, 0, 0, 0); st != blk::kStatusOk) return report("flush", 0, 0, st);
  for (uint32_t i = 0; i < bs; ++i) c[i] = static_cast<uint8_t>(~b[i]);  // stale data cannot pass
  if (const uint8_t st = io(blk::kTypeIn, 0, check, bs); st != blk::kStatusOk) return report("read", 0, bs, st);
  for (uint32_t i = 0; i < bs; ++i) {
    if (c[i] == b[i]) continue;
    Line l = g_root.error_line();
    l.s("root volume boot record read back differs at byte ").u(i).s(": wrote 0x").hex2(b[i]).s(" read 0x").hex2(
        c[i]);
    l.print();
    return;
  }

  Line l;
  l.s(kPrefix).s("root volume boot-count=").u(record_count(c)).c(' ');
  if (have_serial) {
    l.s("serial=");
    for (uint32_t i = 0; i < blk::kIdBytes && serial[i] != 0; ++i)
      l.c(serial[i] > ' ' && serial[i] < 0x7f ? static_cast<char>(serial[i]) : '?');
    l.c(' ');
  }
  l.s("sectors=").u(g_root.capacity()).print();
}

// 64 random bytes (RDRAND where the CPU has it, else the TSC through a mixer) in a page
// of private memory (never in the I/O window), printed in hex:
//   azote-guest: marker HEX
// The confinement tests look for these bytes in the memory of every host process.
void marker() {
  const uint64_t page = platform::alloc(4096, 4096, 1ull << 20, 3ull << 30);
  if (page == 0) {
    Line().s(kPrefix).s("marker: no free RAM").print();
    return;
  }
  uint64_t* const m = phys<uint64_t>(page);
  const bool have_rdrand = (cpuid(1).c & (1u << 30)) != 0;
  uint64_t x = rdtsc() ^ 0x6d61726b6572ull;
  for (int i = 0; i < 8; ++i) {
    uint64_t v = 0;
    bool ok = false;
    for (int t = 0; have_rdrand && !ok && t < 10; ++t) {
      unsigned char c = 0;
      asm volatile("rdrand %0; setc %1" : "=r"(v), "=qm"(c));
      ok = c != 0;
    }
    if (!ok) {  // splitmix64 over the TSC
      x += 0x9e3779b97f4a7c15ull + rdtsc();
      v = x;
      v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ull;
      v = (v ^ (v >> 27)) * 0x94d049bb133111ebull;
      v ^= v >> 31;
    }
    m[i] = v;
  }
  Line l;
  l.s(kPrefix).s("marker ");
  const auto* b = reinterpret_cast<const uint8_t*>(m);  // NOLINT
  for (int i = 0; i < 64; ++i) l.hex2(b[i]);
  l.print();
}

[[noreturn]] void prog_init_impl(const Args& a) {
  bool with_marker = false;
  for (size_t i = 0; i < a.argc; ++i) {
    if (a.argv[i] == "--no-idle")
      g_no_idle = true;
    else if (a.argv[i] == "--marker")
      with_marker = true;
    else
      usage_error("init", "unknown argument (want --no-idle or --marker):", a.argv[i]);
  }
  const uint64_t mib = (platform::ram_bytes() + (1ull << 20) - 1) >> 20;
  Line().s(kPrefix).s("init vcpus=").u(platform::cpus().count).s(" memory=").u(mib).s("MiB").print();
  if (with_marker) marker();
  root_volume();
  if (with_marker) (void)net_lease("init");
  ready();
}

}  // namespace

[[noreturn]] void prog_init(const Args& args) { prog_init_impl(args); }

}  // namespace az

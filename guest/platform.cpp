#include "platform.hpp"

#include "virtio.hpp"

extern "C" char __image_start[], __image_end[];

namespace az::platform {

namespace {

constexpr uint64_t k4G = 1ull << 32;
constexpr uint64_t kMmioHole = 3ull << 30;
constexpr uint32_t kMaxMemmap = 128;
constexpr uint64_t kMaxCmdline = 0x10000;
constexpr uint64_t kMaxTable = 1ull << 20;

struct Range {
  uint64_t start, end;  // [start, end)
};

constinit const HvmStartInfo* g_si = nullptr;
constinit const MemmapEntry* g_memmap = nullptr;
constinit uint32_t g_memmap_n = 0;
constinit Str g_cmdline{};
constinit Range g_reserved[96] = {};
// The I/O window (azote.iowin=START,SIZE) and the next free byte in it.
constinit uint64_t g_iowin_start = 0, g_iowin_size = 0, g_iowin_next = 0;
constinit size_t g_nreserved = 0;
constinit Cpus g_cpus{};
constinit bool g_cpus_done = false;

void reserve(uint64_t start, uint64_t len) {
  if (len == 0 || g_nreserved == sizeof g_reserved / sizeof g_reserved[0]) return;
  const uint64_t end = start + len < start ? ~0ull : start + len;
  g_reserved[g_nreserved++] = Range{start, end};
}

// Whether [addr, addr + len) may be read: inside one memory-map entry (any type),
// or in base memory / the BIOS area, which firmware tables traditionally use.
bool readable(uint64_t addr, uint64_t len) {
  if (len == 0 || addr + len < addr || addr + len > k4G) return false;
  const uint64_t end = addr + len;
  if (end <= 0xa0000 || (addr >= 0xe0000 && end <= 0x100000)) return true;
  if (g_memmap == nullptr) return end <= kMmioHole;
  for (uint32_t i = 0; i < g_memmap_n; ++i) {
    const uint64_t s = g_memmap[i].addr, e = s + g_memmap[i].size;
    if (e >= s && addr >= s && end <= e) return true;
  }
  return false;
}

// Start info, memory map and command line are placed by the loader: trust them
// only below the MMIO hole.
bool plausible(uint64_t addr, uint64_t len) { return addr != 0 && addr + len >= addr && addr + len <= kMmioHole; }

bool checksum_ok(uint64_t addr, uint64_t len) {
  uint8_t sum = 0;
  for (uint64_t i = 0; i < len; ++i) sum = static_cast<uint8_t>(sum + rd8(addr + i));
  return sum == 0;
}

bool sig_is(uint64_t addr, const char* sig, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (rd8(addr + i) != static_cast<uint8_t>(sig[i])) return false;
  return true;
}

// ------------------------------------------------------------------ ACPI
bool rsdp_ok(uint64_t a) { return readable(a, 20) && sig_is(a, "RSD PTR ", 8) && checksum_ok(a, 20); }

uint64_t scan(uint64_t start, uint64_t len, const char* sig, size_t siglen, bool (*ok)(uint64_t)) {
  for (uint64_t a = start; a + 16 <= start + len; a += 16)
    if (sig_is(a, sig, siglen) && ok(a)) return a;
  return 0;
}

uint64_t ebda_base() {
  const uint64_t ebda = uint64_t{rd16(0x40e)} << 4;
  return ebda >= 0x80000 && ebda < 0xa0000 ? ebda : 0;
}

uint64_t find_rsdp() {
  if (g_si != nullptr && g_si->rsdp_paddr != 0 && rsdp_ok(g_si->rsdp_paddr)) return g_si->rsdp_paddr;
  if (const uint64_t ebda = ebda_base(); ebda != 0)
    if (const uint64_t a = scan(ebda, 1024, "RSD PTR ", 8, rsdp_ok); a != 0) return a;
  return scan(0xe0000, 0x20000, "RSD PTR ", 8, rsdp_ok);
}

// A checked ACPI table: returns its length, or 0 if it is not a valid `sig` table.
uint32_t sdt_len(uint64_t a, const char* sig) {
  if (!readable(a, 36)) return 0;
  if (sig != nullptr && !sig_is(a, sig, 4)) return 0;
  const uint32_t len = rd32(a + 4);
  if (len < 36 || len > kMaxTable || !readable(a, len) || !checksum_ok(a, len)) return 0;
  reserve(a, len);
  return len;
}

void add_cpu(Cpus& c, uint32_t apic_id) {
  const uint32_t known = c.count < AZ_MAX_CPUS ? c.count : AZ_MAX_CPUS;
  for (uint32_t i = 0; i < known; ++i)
    if (c.apic_ids[i] == apic_id) return;  // listed as both xAPIC and x2APIC
  if (c.count < AZ_MAX_CPUS) c.apic_ids[c.count] = apic_id;
  ++c.count;
}

bool parse_madt(uint64_t madt, uint32_t len, Cpus& c) {
  uint64_t off = 44;  // header + local APIC address + flags
  while (off + 2 <= len) {
    const uint8_t type = rd8(madt + off), elen = rd8(madt + off + 1);
    if (elen < 2 || off + elen > len) break;
    if (type == 0 && elen >= 8) {  // processor local APIC
      if (rd32(madt + off + 4) & 1) add_cpu(c, rd8(madt + off + 3));
    } else if (type == 9 && elen >= 16) {  // processor local x2APIC
      if (rd32(madt + off + 8) & 1) add_cpu(c, rd32(madt + off + 4));
    }
    off += elen;
  }
  return c.count > 0;
}

// The first valid table `sig` of at least `min_len` bytes the XSDT (or RSDT) lists;
// 0 if none. *len: its length.
uint64_t find_sdt(const char* sig, uint32_t min_len, uint32_t* len) {
  const uint64_t rsdp = find_rsdp();
  if (rsdp == 0) return 0;
  reserve(rsdp, 36);
  uint64_t root = rd32(rsdp + 16);
  unsigned entry_size = 4;
  const char* root_sig = "RSDT";
  if (rd8(rsdp + 15) >= 2 && readable(rsdp, 36)) {
    const uint32_t rlen = rd32(rsdp + 20);
    const uint64_t xsdt = rd64(rsdp + 24);
    if (rlen >= 36 && rlen <= 64 && readable(rsdp, rlen) && checksum_ok(rsdp, rlen) && xsdt != 0 &&
        sdt_len(xsdt, "XSDT") != 0) {
      root = xsdt;
      entry_size = 8;
      root_sig = "XSDT";
    }
  }
  const uint32_t root_len = sdt_len(root, root_sig);
  for (uint64_t off = 36; off + entry_size <= root_len; off += entry_size) {
    const uint64_t t = entry_size == 8 ? rd64(root + off) : rd32(root + off);
    if (*len = sdt_len(t, sig); *len >= min_len) return t;
  }
  return 0;
}

bool cpus_from_acpi(Cpus& c) {
  uint32_t len = 0;
  const uint64_t madt = find_sdt("APIC", 44, &len);
  if (madt == 0) return false;
  c.source = "acpi";
  return parse_madt(madt, len, c);
}

// --------------------------------------------------------------- MP table
bool mpf_ok(uint64_t a) { return readable(a, 16) && rd8(a + 8) == 1 && checksum_ok(a, 16); }

bool cpus_from_mp(Cpus& c) {
  uint64_t mpf = 0;
  if (const uint64_t ebda = ebda_base(); ebda != 0) mpf = scan(ebda, 1024, "_MP_", 4, mpf_ok);
  if (mpf == 0) {  // the last KiB of base memory (639 KiB when the BDA does not say)
    uint64_t basemem_kib = rd16(0x413);
    if (basemem_kib < 512 || basemem_kib > 640) basemem_kib = 640;
    mpf = scan(basemem_kib * 1024 - 1024, 1024, "_MP_", 4, mpf_ok);
  }
  if (mpf == 0) mpf = scan(0xf0000, 0x10000, "_MP_", 4, mpf_ok);
  if (mpf == 0) return false;
  reserve(mpf, 16);
  if (rd8(mpf + 11) != 0) {  // a default configuration: two processors
    c.source = "mp-default";
    add_cpu(c, 0);
    add_cpu(c, 1);
    return true;
  }
  const uint64_t cfg = rd32(mpf + 4);
  if (!readable(cfg, 44) || !sig_is(cfg, "PCMP", 4)) return false;
  const uint16_t len = rd16(cfg + 4), count = rd16(cfg + 34);
  if (len < 44 || !readable(cfg, len) || !checksum_ok(cfg, len)) return false;
  reserve(cfg, len);
  // Walk entries to the end of the base table; stop early at `count` when it is set
  // (some firmware, e.g. qboot, leaves the count 0).
  uint64_t off = 44;
  for (uint32_t i = 0; (count == 0 || i < count) && off < len; ++i) {
    const uint8_t type = rd8(cfg + off);
    const uint64_t elen = type == 0 ? 20 : 8;
    if (type > 4 || off + elen > len) break;
    if (type == 0 && (rd8(cfg + off + 3) & 1)) add_cpu(c, rd8(cfg + off + 1));
    off += elen;
  }
  c.source = "mp";
  return c.count > 0;
}

// "0x..." hex.
bool parse_hex(Str s, uint64_t* out) {
  if (s.n < 3 || s.p[0] != '0' || (s.p[1] != 'x' && s.p[1] != 'X') || s.n > 18) return false;
  uint64_t v = 0;
  for (size_t i = 2; i < s.n; ++i) {
    const char c = s.p[i];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return false;
    v = v << 4 | static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

bool is_iowin_word(Str w) { return w.n >= 12 && Str{w.p, 12} == "azote.iowin="; }

// azote.iowin=START,SIZE: page-aligned RAM below 3 GiB. Reserved at once, so that no
// private allocation ever lands in memory the cards can see.
void find_io_window() {
  const Str cl = g_cmdline;
  size_t i = 0;
  while (i < cl.n) {
    while (i < cl.n && cl.p[i] == ' ') ++i;
    const size_t start = i;
    while (i < cl.n && cl.p[i] != ' ') ++i;
    const Str w{cl.p + start, i - start};
    if (!is_iowin_word(w)) continue;
    size_t comma = 12;
    while (comma < w.n && w.p[comma] != ',') ++comma;
    uint64_t a = 0, n = 0;
    if (comma >= w.n || !parse_hex(Str{w.p + 12, comma - 12}, &a) || !parse_hex(Str{w.p + comma + 1, w.n - comma - 1}, &n))
      return;
    if (n == 0 || (a & 0xfff) != 0 || (n & 0xfff) != 0 || a + n < a || a + n > (3ull << 30)) return;
    g_iowin_start = a;
    g_iowin_size = n;
    g_iowin_next = a;
    reserve(a, n);
    return;
  }
}

}  // namespace

void init(uint64_t start_info) {
  reserve(0, 0x1000);  // IVT and BIOS data area
  reserve(reinterpret_cast<uint64_t>(__image_start),
          reinterpret_cast<uint64_t>(__image_end) - reinterpret_cast<uint64_t>(__image_start));
  if (!plausible(start_info, sizeof(HvmStartInfo))) return;
  const auto* si = phys<const HvmStartInfo>(start_info);
  if (si->magic != kHvmStartMagic) return;
  g_si = si;
  reserve(start_info, sizeof(HvmStartInfo));
  if (si->version >= 1 && si->memmap_entries != 0 && si->memmap_entries <= kMaxMemmap &&
      plausible(si->memmap_paddr, uint64_t{si->memmap_entries} * sizeof(MemmapEntry))) {
    g_memmap = phys<const MemmapEntry>(si->memmap_paddr);
    g_memmap_n = si->memmap_entries;
    reserve(si->memmap_paddr, uint64_t{g_memmap_n} * sizeof(MemmapEntry));
  }
  if (si->cmdline_paddr != 0 && plausible(si->cmdline_paddr, 1)) {
    const char* p = phys<const char>(si->cmdline_paddr);
    size_t n = 0;
    while (n < kMaxCmdline && readable(si->cmdline_paddr + n, 1) && p[n] != 0) ++n;
    g_cmdline = Str{p, n};
    reserve(si->cmdline_paddr, n + 1);
    find_io_window();
  }
  if (si->nr_modules != 0 && si->nr_modules <= 64 && plausible(si->modlist_paddr, uint64_t{si->nr_modules} * 32)) {
    reserve(si->modlist_paddr, uint64_t{si->nr_modules} * 32);
    for (uint32_t i = 0; i < si->nr_modules; ++i) {
      const uint64_t m = si->modlist_paddr + i * 32;
      reserve(rd64(m), rd64(m + 8));
      if (const uint64_t cl = rd64(m + 16); cl != 0) reserve(cl, 4096);
    }
  }
}

bool have_start_info() { return g_si != nullptr; }
Str cmdline() { return g_cmdline; }
uint64_t ram_bytes() {
  uint64_t sum = 0;
  for (uint32_t i = 0; i < g_memmap_n; ++i)
    if (g_memmap[i].type == 1) sum += g_memmap[i].size;
  return sum;
}

Args args() {
  Args a;
  const Str cl = g_cmdline;
  auto space = [](char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; };
  bool found = false;
  size_t i = 0;
  while (i < cl.n) {
    while (i < cl.n && space(cl.p[i])) ++i;
    const size_t start = i;
    while (i < cl.n && !space(cl.p[i])) ++i;
    if (i == start) break;
    const Str word{cl.p + start, i - start};
    if (!found) {
      constexpr size_t kLen = 10;  // "azote.run="
      if (word.n >= kLen && Str{word.p, kLen} == "azote.run=") {
        found = true;
        a.name = Str{word.p + kLen, word.n - kLen};
      }
    } else if (a.argc < sizeof a.argv / sizeof a.argv[0] && !virtio::is_device_word(word) && !is_iowin_word(word)) {
      a.argv[a.argc++] = word;
    }
  }
  if (!found) a.name = Str{"hello", 5};
  return a;
}

const Cpus& cpus() {
  if (!g_cpus_done) {
    g_cpus_done = true;
    if (!cpus_from_acpi(g_cpus)) {
      g_cpus = Cpus{};
      if (!cpus_from_mp(g_cpus)) g_cpus = Cpus{};
    }
    if (g_cpus.count == 0) {
      g_cpus.count = 1;
      g_cpus.apic_ids[0] = cpuid(1).b >> 24;
      g_cpus.source = "none";
    }
  }
  return g_cpus;
}

uint64_t acpi_tpm2_crb() {
  // TPM2 (TCG ACPI spec): header (36 bytes), platform class u16, reserved u16, the
  // CRB control area's address u64 (offset 40), start method u32 (offset 48).
  uint32_t len = 0;
  const uint64_t t = find_sdt("TPM2", 52, &len);
  if (t == 0 || rd32(t + 48) != 7) return 0;  // 7: Command Response Buffer
  return rd64(t + 40);
}

uint64_t alloc(uint64_t size, uint64_t align, uint64_t lo, uint64_t hi) {
  (void)cpus();  // the firmware tables must be known (and reserved) first
  const MemmapEntry fallback[2] = {{0, 0xa0000, 1, 0}, {0x100000, 31ull << 20, 1, 0}};
  const MemmapEntry* map = g_memmap != nullptr ? g_memmap : fallback;
  const uint32_t n = g_memmap != nullptr ? g_memmap_n : 2;
  if (hi > k4G) hi = k4G;
  uint64_t best = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (map[i].type != 1) continue;
    const uint64_t start = map[i].addr > lo ? map[i].addr : lo;
    const uint64_t rend = map[i].addr + map[i].size;
    const uint64_t end = rend < hi ? rend : hi;
    uint64_t cand = (start + align - 1) & ~(align - 1);
    for (int guard = 0; guard < 256 && cand >= start && cand + size > cand && cand + size <= end; ++guard) {
      bool moved = false;
      for (size_t r = 0; r < g_nreserved; ++r) {
        if (cand < g_reserved[r].end && g_reserved[r].start < cand + size) {
          cand = (g_reserved[r].end + align - 1) & ~(align - 1);
          moved = true;
          break;
        }
      }
      if (!moved) {
        if (best == 0 || cand < best) best = cand;
        break;
      }
    }
  }
  if (best != 0) reserve(best, size);
  return best;
}

uint64_t alloc_io(uint64_t size, uint64_t align) {
  if (g_iowin_size == 0) return alloc(size, align, 1ull << 20, 3ull << 30);
  const uint64_t cand = (g_iowin_next + align - 1) & ~(align - 1);
  if (cand < g_iowin_next || cand + size < cand || cand + size > g_iowin_start + g_iowin_size) return 0;
  g_iowin_next = cand + size;
  return cand;
}

void io_window(uint64_t* start, uint64_t* size) {
  *start = g_iowin_start;
  *size = g_iowin_size;
}

}  // namespace az::platform

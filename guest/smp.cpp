// The `smp` program. The BSP (in user mode) reads the CPU list, copies the real-mode
// trampoline below 1 MiB, builds one block per AP (GDT, TSS, kernel and user
// stacks), then sends INIT-SIPI-SIPI through the local APIC: xAPIC MMIO from user
// mode, or x2APIC MSRs through the CPL0 wrmsr service (rt.hpp) when the APIC is in x2APIC
// mode. Each AP runs the trampoline -> boot.S common32 -> azote_ap_entry64 at CPL0
// (a few dozen emulated instructions) and prints from user mode.
#include "descriptors.hpp"
#include "platform.hpp"
#include "programs.hpp"
#include "rt.hpp"

extern "C" {
// Shared with azote_ap_entry64 (boot.S).
uint32_t azote_ap_next;   // slots taken (lock xadd at CPL0)
uint32_t azote_ap_ready;  // slots prepared by the BSP
uint64_t azote_ap_blocks[AZ_MAX_CPUS];
extern const char azote_trampoline[], azote_trampoline_end[];
}

namespace az {
namespace {

constexpr uint32_t kMsrApicBase = 0x1b;
constexpr uint32_t kMsrX2apicSvr = 0x80f;
constexpr uint32_t kMsrX2apicIcr = 0x830;
constexpr uint32_t kIcrInit = 0x4500;  // INIT, level assert, physical destination
constexpr uint32_t kIcrSipi = 0x4600;  // start-up, level assert
constexpr uint32_t kIcrBusy = 1u << 12;

uint32_t g_online;  // CPUs that printed their line (.bss)
uint32_t g_bsp_apic_id;
bool g_x2apic;
uint64_t g_apic_mmio;
uint64_t g_tsc_hz;

uint32_t own_apic_id() {
  if (cpuid(0).a >= 0xb) {
    const Cpuid t = cpuid(0xb, 0);
    if (t.b != 0) return t.d;
  }
  return cpuid(1).b >> 24;
}

void wr8(uint64_t a, uint8_t v) { *phys<volatile uint8_t>(a) = v; }
void wr_le(uint64_t a, uint64_t v, unsigned bytes) {
  for (unsigned i = 0; i < bytes; ++i) wr8(a + i, static_cast<uint8_t>(v >> (8 * i)));
}

// GDT (a copy of the BSP's with this block's TSS), GDTR and TSS for one AP.
void prepare_block(uint64_t blk) {
  for (uint64_t i = 0; i < 4096; ++i) wr8(blk + i, 0);
  for (uint64_t i = 0; i < AZ_GDT_ENTRIES * 8; ++i) wr8(blk + AZ_AP_GDT + i, rd8(AZ_GDT + i));
  const uint64_t tss = blk + AZ_AP_TSS, limit = AZ_TSS_LIMIT;
  wr_le(blk + AZ_AP_GDT + AZ_SEL_TSS, tss_descriptor_lo(tss, limit), 8);
  wr_le(blk + AZ_AP_GDT + AZ_SEL_TSS + 8, tss >> 32, 8);
  wr_le(blk + AZ_AP_GDTR, AZ_GDT_ENTRIES * 8 - 1, 2);
  wr_le(blk + AZ_AP_GDTR + 2, blk + AZ_AP_GDT, 8);
  wr_le(tss + AZ_TSS_RSP0, blk + AZ_AP_RSP0_TOP, 8);
  wr_le(tss + AZ_TSS_IST1, blk + AZ_AP_IST1_TOP, 8);
  wr_le(tss + AZ_TSS_IOMAP, AZ_TSS_SIZE, 2);
  wr8(tss + AZ_TSS_LIMIT, 0xff);  // I/O bitmap terminator (ports below it: allowed)
}

volatile uint32_t* apic_reg(uint32_t off) { return phys<volatile uint32_t>(g_apic_mmio + off); }

void send_ipi(uint32_t apic_id, uint32_t icr_low) {
  if (g_x2apic) {
    wrmsr(kMsrX2apicIcr, (uint64_t{apic_id} << 32) | icr_low);
    return;
  }
  *apic_reg(0x310) = apic_id << 24;
  *apic_reg(0x300) = icr_low;
  for (int i = 0; i < 100 && (*apic_reg(0x300) & kIcrBusy) != 0; ++i) cpu_relax();
}

void delay_us(uint64_t us) {
  const uint64_t start = rdtsc(), ticks = g_tsc_hz / 1000000 * us;
  while (rdtsc() - start < ticks) cpu_relax();
}

[[noreturn]] void fail(const char* what) {
  Line().s(kPrefix).s("smp: ").s(what).print();
  exit(1);
}

}  // namespace

[[noreturn]] void prog_smp(const Args& args) {
  bool want_x2apic = false;
  if (args.argc > 0) {
    if (!(args.argv[0] == "x2apic")) {
      Line().s(kPrefix).s("smp: unknown option '").s(args.argv[0]).s("' (want nothing or x2apic)").print();
      exit(126);
    }
    want_x2apic = true;
  }
  const Cpus& cpus = platform::cpus();
  const uint32_t bsp = own_apic_id();
  g_bsp_apic_id = bsp;
  Line().s(kPrefix).s("cpu 0 online").print();
  __atomic_store_n(&g_online, 1, __ATOMIC_RELEASE);
  if (cpus.count <= 1) exit(0);

  uint32_t targets = cpus.count;
  if (targets > AZ_MAX_CPUS) {
    Line().s(kPrefix).s("smp: ").u(cpus.count).s(" CPUs listed, starting the first ").u(AZ_MAX_CPUS).print();
    targets = AZ_MAX_CPUS;
  }
  uint32_t naps = 0;  // listed CPUs other than this one (normally targets - 1)
  for (uint32_t i = 0; i < targets; ++i) naps += cpus.apic_ids[i] != bsp ? 1 : 0;
  if (naps == 0) exit(0);
  g_tsc_hz = tsc_hz();
  if (g_tsc_hz == 0) g_tsc_hz = 3000000000ull;  // unknown: assume fast, so waits only get longer

  // The trampoline: a page-aligned free page of base memory (SIPI vector = page >> 12).
  const uint64_t tramp = platform::alloc(4096, 4096, 0x10000, 0x9f000);
  if (tramp == 0) fail("no free page below 640 KiB for the AP trampoline");
  const size_t tlen = static_cast<size_t>(azote_trampoline_end - azote_trampoline);
  for (size_t i = 0; i < tlen; ++i) wr8(tramp + i, static_cast<uint8_t>(azote_trampoline[i]));

  const uint64_t blocks = platform::alloc(uint64_t{naps} * AZ_AP_BLOCK_SIZE, 4096, 1ull << 20, 3ull << 30);
  if (blocks == 0) fail("no free RAM for the AP stacks");
  for (uint32_t i = 0; i < naps; ++i) {
    prepare_block(blocks + uint64_t{i} * AZ_AP_BLOCK_SIZE);
    azote_ap_blocks[i] = blocks + uint64_t{i} * AZ_AP_BLOCK_SIZE;
  }
  __atomic_store_n(&azote_ap_ready, naps, __ATOMIC_RELEASE);

  // The local APIC: x2APIC mode (MSRs) if the firmware or hypervisor enabled it,
  // else xAPIC MMIO, which user mode reaches directly through the identity map.
  uint64_t base = rdmsr(kMsrApicBase);
  if ((base & (1u << 11)) == 0) {
    base |= 1u << 11;  // globally disabled: enable (xAPIC mode)
    wrmsr(kMsrApicBase, base);
  }
  if (want_x2apic && (base & (1u << 10)) == 0) {
    // `smp x2apic`: switch this CPU's APIC to x2APIC mode first, to exercise the
    // hypervisor's x2APIC (MSR) path. APs start in xAPIC mode and need nothing.
    if ((cpuid(1).c & (1u << 21)) == 0) fail("x2apic: CPUID says the CPU has no x2APIC");
    base |= 1u << 10;
    wrmsr(kMsrApicBase, base);
    base = rdmsr(kMsrApicBase);
  }
  g_x2apic = (base & (1u << 10)) != 0;
  if (g_x2apic) {
    const uint64_t svr = rdmsr(kMsrX2apicSvr);
    if ((svr & 0x100) == 0) wrmsr(kMsrX2apicSvr, svr | 0x100);
  } else {
    g_apic_mmio = base & 0xffffff000ull;
    if (g_apic_mmio >= (1ull << 32)) fail("local APIC above 4 GiB");
    if ((*apic_reg(0xf0) & 0x100) == 0) *apic_reg(0xf0) = *apic_reg(0xf0) | 0x1ff;
  }

  const uint32_t sipi = kIcrSipi | static_cast<uint32_t>(tramp >> 12);
  for (uint32_t i = 0; i < targets; ++i)
    if (cpus.apic_ids[i] != bsp) send_ipi(cpus.apic_ids[i], kIcrInit);
  for (uint32_t i = 0; i < targets; ++i)
    if (cpus.apic_ids[i] != bsp) send_ipi(cpus.apic_ids[i], sipi);
  delay_us(200);
  for (uint32_t i = 0; i < targets; ++i)  // ignored by an AP that already started
    if (cpus.apic_ids[i] != bsp) send_ipi(cpus.apic_ids[i], sipi);

  const uint64_t start = rdtsc(), limit = g_tsc_hz * 5;
  while (__atomic_load_n(&g_online, __ATOMIC_ACQUIRE) < naps + 1) {
    if (rdtsc() - start > limit) {
      Line()
          .s(kPrefix)
          .s("smp timeout online=")
          .u(__atomic_load_n(&g_online, __ATOMIC_ACQUIRE))
          .s(" of ")
          .u(naps + 1)
          .print();
      exit(1);
    }
    cpu_relax();
  }
  exit(0);
}

// An AP at CPL3 (from azote_ap_entry64). K is the AP's position among the APs in
// the firmware's CPU list (the BSP is cpu 0); its start slot + 1 if it is not listed.
extern "C" [[noreturn]] void azote_user_ap(uint32_t slot) {
  const Cpus& cpus = platform::cpus();  // parsed by the BSP before any SIPI
  const uint32_t me = own_apic_id();
  const uint32_t known = cpus.count < AZ_MAX_CPUS ? cpus.count : AZ_MAX_CPUS;
  uint32_t k = slot + 1, pos = 0;
  for (uint32_t i = 0; i < known; ++i) {
    if (cpus.apic_ids[i] == g_bsp_apic_id) continue;
    ++pos;
    if (cpus.apic_ids[i] == me) {
      k = pos;
      break;
    }
  }
  Line().s(kPrefix).s("cpu ").u(k).s(" online").print();
  __atomic_fetch_add(&g_online, 1, __ATOMIC_ACQ_REL);
  park();
}

}  // namespace az

#include "acpi/acpi.hpp"

#include <cstring>
#include <string_view>

namespace azote::acpi {
namespace {

constexpr size_t kHeader = 36;

class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& b) : b_(b) {}
  size_t begin_table(std::string_view sig, uint8_t revision) {
    align(16);
    const size_t at = b_.size();
    b_.resize(at + kHeader);
    std::memcpy(&b_[at], sig.data(), 4);
    b_[at + 8] = revision;
    std::memcpy(&b_[at + 10], "AZOTE ", 6);     // OEM ID
    std::memcpy(&b_[at + 16], "AZOTEHV ", 8);   // OEM table ID
    put32(at + 24, 1);                          // OEM revision
    std::memcpy(&b_[at + 28], "AZOT", 4);       // creator ID
    put32(at + 32, 1);                          // creator revision
    return at;
  }
  void end_table(size_t at) {
    put32(at + 4, static_cast<uint32_t>(b_.size() - at));
    b_[at + 9] = 0;
    b_[at + 9] = static_cast<uint8_t>(-checksum(&b_[at], b_.size() - at));
  }
  void u8(uint8_t v) { b_.push_back(v); }
  void u16(uint16_t v) { raw(&v, 2); }
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void zeros(size_t n) { b_.insert(b_.end(), n, 0); }
  void put32(size_t at, uint32_t v) { std::memcpy(&b_[at], &v, 4); }
  void put64(size_t at, uint64_t v) { std::memcpy(&b_[at], &v, 8); }
  void align(size_t a) { b_.resize((b_.size() + a - 1) / a * a, 0); }
  size_t size() const { return b_.size(); }

 private:
  void raw(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b_.insert(b_.end(), c, c + n);
  }
  std::vector<uint8_t>& b_;
};

}  // namespace

uint8_t checksum(const uint8_t* p, size_t n) {
  uint8_t s = 0;
  for (size_t i = 0; i < n; ++i) s = static_cast<uint8_t>(s + p[i]);
  return s;
}

Tables build(uint64_t base, uint32_t nvcpus, uint64_t lapic_addr, uint64_t ioapic_addr, uint64_t tpm_crb_control) {
  Tables t;
  t.base = base;
  Writer w(t.bytes);

  // RSDP (ACPI 6.x section 5.2.5): 36 bytes, filled in once the XSDT address is known.
  w.zeros(36);

  // DSDT: no devices are described by AML (all platform devices are fixed-function).
  const size_t dsdt = w.begin_table("DSDT", 2);
  w.end_table(dsdt);

  // FADT (5.2.9), revision 6: hardware-reduced, no VGA, reset register = i8042 port 0x64 <- 0xfe.
  const size_t fadt = w.begin_table("FACP", 6);
  w.zeros(276 - kHeader);
  auto& b = t.bytes;
  w.put32(fadt + 40, static_cast<uint32_t>(base + dsdt));                 // DSDT
  uint16_t boot_arch = 1u << 2;                                           // VGA not present
  std::memcpy(&b[fadt + 109], &boot_arch, 2);
  const uint32_t flags = (1u << 20) | (1u << 10);                         // HW_REDUCED_ACPI | RESET_REG_SUP
  w.put32(fadt + 112, flags);
  b[fadt + 116] = 1;   // reset register: system I/O space
  b[fadt + 117] = 8;   // bit width
  b[fadt + 119] = 1;   // byte access
  w.put64(fadt + 120, 0x64);
  b[fadt + 128] = 0xfe;                                                   // reset value
  b[fadt + 131] = 5;                                                      // FADT minor version
  w.put64(fadt + 140, base + dsdt);                                       // X_DSDT
  std::memcpy(&b[fadt + 268], "AZOTEHV ", 8);                             // hypervisor vendor
  w.end_table(fadt);

  // MADT (5.2.12): one enabled local APIC per vCPU, one I/O APIC.
  const size_t madt = w.begin_table("APIC", 5);
  w.u32(static_cast<uint32_t>(lapic_addr));
  w.u32(1);  // PCAT_COMPAT: dual 8259s present (KVM's in-kernel PIC)
  for (uint32_t i = 0; i < nvcpus; ++i) {
    if (i < 255) {
      w.u8(0); w.u8(8); w.u8(static_cast<uint8_t>(i)); w.u8(static_cast<uint8_t>(i)); w.u32(1);
    } else {  // x2APIC entry for IDs that do not fit 8 bits
      w.u8(9); w.u8(16); w.u16(0); w.u32(i); w.u32(1); w.u32(i);
    }
  }
  w.u8(1); w.u8(12); w.u8(0); w.u8(0); w.u32(static_cast<uint32_t>(ioapic_addr)); w.u32(0);
  w.end_table(madt);

  // TPM2 (TCG ACPI Specification 1.3, 8.3): a client platform's TPM 2.0, start method
  // 7 (Command Response Buffer), no start-method parameters beyond the 12 reserved bytes.
  size_t tpm2 = 0;
  if (tpm_crb_control != 0) {
    tpm2 = w.begin_table("TPM2", 4);
    w.u16(0);  // platform class: client
    w.u16(0);
    w.u64(tpm_crb_control);
    w.u32(7);
    w.zeros(12);
    w.end_table(tpm2);
  }

  // XSDT (5.2.8): FADT, MADT (and TPM2).
  const size_t xsdt = w.begin_table("XSDT", 1);
  w.u64(base + fadt);
  w.u64(base + madt);
  if (tpm2 != 0) w.u64(base + tpm2);
  w.end_table(xsdt);

  std::memcpy(&b[0], "RSD PTR ", 8);
  std::memcpy(&b[9], "AZOTE ", 6);
  b[15] = 2;                                             // revision: ACPI 2.0+
  w.put32(16, 0);                                        // no RSDT
  w.put32(20, 36);                                       // length
  w.put64(24, base + xsdt);
  b[8] = static_cast<uint8_t>(-checksum(&b[0], 20));
  b[32] = static_cast<uint8_t>(-checksum(&b[0], 36));
  return t;
}

}  // namespace azote::acpi

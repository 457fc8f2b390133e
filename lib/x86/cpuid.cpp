#include "x86/cpuid.hpp"

#include <cstring>

namespace azote::x86 {
namespace {

constexpr uint32_t kLeaf1EcxHypervisor = 1u << 31;
constexpr uint32_t kLeaf1EcxMonitor = 1u << 3;
constexpr uint32_t kLeaf1EcxPdcm = 1u << 15;   // perf capabilities MSR: no vPMU
constexpr uint32_t kLeaf1EdxHtt = 1u << 28;
constexpr uint32_t kLeaf7EdxArchCapabilities = 1u << 29;
constexpr uint32_t kLeaf7EcxWaitpkg = 1u << 5;

uint32_t bits_for(uint32_t n) {
  uint32_t s = 0;
  while ((1u << s) < n) ++s;
  return s;
}

}  // namespace

void sanitize_cpuid(kvm::CpuidEntries& c, uint32_t vcpu_id, uint32_t nvcpus) {
  const uint32_t core_shift = bits_for(nvcpus);
  for (auto& e : c.entries) {
    switch (e.function) {
      case 0x1:
        e.ebx = (vcpu_id << 24) | ((nvcpus & 0xff) << 16) | (8u << 8) | (e.ebx & 0xff);
        e.ecx |= kLeaf1EcxHypervisor;
        e.ecx &= ~(kLeaf1EcxMonitor | kLeaf1EcxPdcm);
        if (nvcpus > 1) e.edx |= kLeaf1EdxHtt; else e.edx &= ~kLeaf1EdxHtt;
        break;
      case 0x4:
        // Cache topology: one thread per core, nvcpus cores per package.
        e.eax = (e.eax & 0x3fff) | ((nvcpus - 1) << 26);
        if (((e.eax >> 5) & 7) >= 3) e.eax |= (nvcpus - 1) << 14;  // L3 shared by all cores
        break;
      case 0x6:
        e.eax &= 1u << 2;  // only ARAT (always-running APIC timer)
        e.ebx = e.ecx = e.edx = 0;
        break;
      case 0x7:
        if (e.index == 0) {
          e.edx &= ~kLeaf7EdxArchCapabilities;
          e.ecx &= ~kLeaf7EcxWaitpkg;
        }
        break;
      case 0xa:  // no virtual PMU
        e.eax = e.ebx = e.ecx = e.edx = 0;
        break;
      case 0xb:
      case 0x1f:
        e.edx = vcpu_id;
        if (e.index == 0) {
          e.eax = 0;           // SMT level: no sibling threads
          e.ebx = 1;
          e.ecx = (1u << 8) | 0;
        } else if (e.index == 1) {
          e.eax = core_shift;  // core level
          e.ebx = nvcpus;
          e.ecx = (2u << 8) | 1;
        } else {
          e.eax = e.ebx = 0;
          e.ecx = e.index;
        }
        break;
      case 0x40000000: {
        // KVM signature; the max hypervisor leaf stays whatever KVM reported.
        const char sig[12] = {'K', 'V', 'M', 'K', 'V', 'M', 'K', 'V', 'M', 0, 0, 0};
        std::memcpy(&e.ebx, sig, 4);
        std::memcpy(&e.ecx, sig + 4, 4);
        std::memcpy(&e.edx, sig + 8, 4);
        break;
      }
      default:
        break;
    }
  }
}

}  // namespace azote::x86

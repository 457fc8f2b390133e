// CPUID policy: start from KVM_GET_SUPPORTED_CPUID and make it truthful for this VM
// (topology, APIC IDs, hypervisor leaves) and drop features a guest cannot use here.
#pragma once

#include <cstdint>

#include "kvm/kvm.hpp"

namespace azote::x86 {

// Rewrites `c` for vCPU `vcpu_id` of a VM with `nvcpus` vCPUs (one socket, one
// thread per core).
void sanitize_cpuid(kvm::CpuidEntries& c, uint32_t vcpu_id, uint32_t nvcpus);

}  // namespace azote::x86

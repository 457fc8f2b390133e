// Thin RAII wrappers over the KVM fd hierarchy: Kvm (/dev/kvm) -> VmFd -> VcpuFd.
// Each owns one kernel fd and exposes that fd's ioctls as methods returning
// Result<..., KvmError> with the errno uninterpreted. Nothing outside this library
// issues KVM ioctls.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/mapping.hpp"
#include "base/unique_fd.hpp"

namespace azote::kvm {

enum class KvmErrc {
  kOpen = 1,      // /dev/kvm missing or not accessible
  kApiVersion,    // unexpected KVM_GET_API_VERSION
  kMissingCap,    // a capability azote-hv needs is absent
  kIoctl,         // an ioctl failed
};
using KvmError = Error<KvmErrc>;
template <class T>
using KvmResult = Result<T, KvmError>;

// CPUID entries as KVM_{GET_SUPPORTED,SET}_CPUID2 want them.
struct CpuidEntries {
  std::vector<kvm_cpuid_entry2> entries;
  kvm_cpuid_entry2* find(uint32_t function, uint32_t index = 0);
};

// What this host's KVM offers for backing guest RAM with a guest_memfd (memory KVM
// reaches through the fd itself, not through a process's mapping). azote needs
// the mmap-able, shared-by-default kind (GUEST_MEMFD_FLAG_MMAP | INIT_SHARED,
// Linux 6.18) so that a VM of the default type can use it and the VMM can map it (as
// KVM's own accesses to guest memory need).
struct GuestMemfdSupport {
  bool usable = false;
  uint64_t flags = 0;   // the flags to create it with when usable
  std::string reason;   // why not, naming the capability, when !usable
};

struct MsrEntry {
  uint32_t index;
  uint64_t data;
};

class VcpuFd {
 public:
  VcpuFd(UniqueFd fd, MappedRegion run, int id) : fd_(std::move(fd)), run_map_(std::move(run)), id_(id) {}
  int id() const { return id_; }
  int fd() const { return fd_.get(); }
  // The shared kvm_run page (exit information).
  kvm_run* run() const { return reinterpret_cast<kvm_run*>(run_map_.data()); }  // NOLINT
  // Size of the kvm_run mapping (PIO data and the coalesced MMIO ring follow the struct).
  size_t run_size() const { return run_map_.size(); }

  // KVM_RUN. Returns the errno on failure (EINTR when kicked by a signal).
  int run_once();
  KvmResult<kvm_regs> get_regs() const;
  KvmResult<void> set_regs(const kvm_regs& r);
  KvmResult<kvm_sregs> get_sregs() const;
  KvmResult<void> set_sregs(const kvm_sregs& s);
  KvmResult<void> set_fpu(const kvm_fpu& f);
  KvmResult<void> set_cpuid(const CpuidEntries& c);
  KvmResult<void> set_msrs(std::span<const MsrEntry> msrs);
  KvmResult<uint64_t> get_msr(uint32_t index) const;
  KvmResult<kvm_mp_state> get_mp_state() const;
  KvmResult<void> set_mp_state(uint32_t state);
  KvmResult<kvm_lapic_state> get_lapic() const;
  KvmResult<void> set_lapic(const kvm_lapic_state& l);
  KvmResult<kvm_vcpu_events> get_events() const;
  // KVM_TRANSLATE: guest-linear to guest-physical through the vCPU's page tables.
  KvmResult<uint64_t> translate(uint64_t linear) const;
  KvmResult<kvm_fpu> get_fpu() const;

 private:
  UniqueFd fd_;
  MappedRegion run_map_;
  int id_;
};

class VmFd {
 public:
  explicit VmFd(UniqueFd fd, int run_size) : fd_(std::move(fd)), run_size_(run_size) {}
  int fd() const { return fd_.get(); }

  KvmResult<void> set_tss_addr(uint64_t addr);
  KvmResult<void> set_identity_map_addr(uint64_t addr);
  KvmResult<void> create_irqchip();
  KvmResult<void> create_pit2();
  KvmResult<void> set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host);
  // KVM_CAP_GUEST_MEMFD, KVM_CAP_USER_MEMORY2 and KVM_CAP_GUEST_MEMFD_FLAGS, asked of this VM.
  GuestMemfdSupport guest_memfd_support() const;
  // KVM_CREATE_GUEST_MEMFD: `size` bytes of memory bound to this VM.
  KvmResult<UniqueFd> create_guest_memfd(uint64_t size, uint64_t flags);
  // KVM_SET_USER_MEMORY_REGION2 with KVM_MEM_GUEST_MEMFD: the slot's memory is
  // [offset, offset+size) of `guest_memfd`; `host` is a mapping of the same pages (KVM
  // wants a valid address; with an mmap-able guest_memfd it faults through the fd).
  KvmResult<void> set_user_memory_region2(uint32_t slot, uint64_t gpa, uint64_t size, void* host, int guest_memfd,
                                          uint64_t offset);
  KvmResult<void> irq_line(uint32_t irq, bool level);
  KvmResult<void> set_clock(uint64_t ns);
  KvmResult<void> enable_cap(uint32_t cap, uint64_t arg0);
  int check_extension(long cap) const;
  KvmResult<std::unique_ptr<VcpuFd>> create_vcpu(int id);
  // KVM_IOEVENTFD: a guest write of `len` bytes equal to `datamatch` at MMIO `addr`
  // signals `fd` in the kernel, without an exit to this process.
  KvmResult<void> ioeventfd(uint64_t addr, uint32_t len, uint64_t datamatch, int fd, bool deassign = false);
  // KVM_IRQFD: a write to `fd` raises interrupt line `gsi` (edge), from any process.
  KvmResult<void> irqfd(uint32_t gsi, int fd, bool deassign = false);

 private:
  UniqueFd fd_;
  int run_size_;
};

class Kvm {
 public:
  static KvmResult<Kvm> open(const char* path = "/dev/kvm");
  // An open /dev/kvm handed over by the launcher (the jail has no /dev/kvm).
  static KvmResult<Kvm> adopt(UniqueFd fd);
  int check_extension(long cap) const;
  KvmResult<CpuidEntries> supported_cpuid() const;
  KvmResult<std::vector<uint32_t>> msr_index_list() const;
  KvmResult<std::unique_ptr<VmFd>> create_vm() const;
  int fd() const { return fd_.get(); }

 private:
  explicit Kvm(UniqueFd fd, int run_size) : fd_(std::move(fd)), run_size_(run_size) {}
  UniqueFd fd_;
  int run_size_;
};

}  // namespace azote::kvm

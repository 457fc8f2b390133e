#include "kvm/kvm.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

namespace azote::kvm {
namespace {

// SAFETY (for every ioctl below): the fd is one this object owns, and the argument
// points to a struct of exactly the type the ioctl's _IOC size encodes, kept alive
// for the duration of the call. The kernel validates everything else.
template <class... A>
int xioctl(int fd, unsigned long req, A... args) {
  int r;
  do {
    r = ::ioctl(fd, req, args...);
  } while (r < 0 && errno == EINTR && req != KVM_RUN);
  return r;
}

Unexpected<KvmError> ioctl_error(const char* what) { return errno_error(KvmErrc::kIoctl, what); }

// linux/kvm.h declares the variable-length structs below with __DECLARE_FLEX_ARRAY,
// which under C++ adds an empty struct member: sizeof() and the array offset differ
// from C, and so do the ioctl numbers that encode the size. Use the C ABI directly:
// an 8-byte header (4 for kvm_msr_list) followed by the entries.
struct CpuidHeader {
  uint32_t nent, padding;
};
struct MsrsHeader {
  uint32_t nmsrs, pad;
};
static_assert(sizeof(CpuidHeader) == 8 && sizeof(MsrsHeader) == 8);
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CpuidHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CpuidHeader);
constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, uint32_t);

// guest_memfd, from the Linux 6.18 uapi (include/uapi/linux/kvm.h): the distribution's
// headers may predate it, so the ABI is spelled out here. Layouts and numbers are the
// kernel's; the static_asserts pin the sizes the ioctl numbers encode.
struct KvmCreateGuestMemfd {
  uint64_t size, flags;
  uint64_t reserved[6];
};
struct KvmUserspaceMemoryRegion2 {
  uint32_t slot, flags;
  uint64_t guest_phys_addr, memory_size, userspace_addr;
  uint64_t guest_memfd_offset;
  uint32_t guest_memfd, pad1;
  uint64_t pad2[14];
};
static_assert(sizeof(KvmCreateGuestMemfd) == 64 && sizeof(KvmUserspaceMemoryRegion2) == 160);
constexpr unsigned long kCreateGuestMemfd = _IOWR(KVMIO, 0xd4, KvmCreateGuestMemfd);
constexpr unsigned long kSetUserMemoryRegion2 = _IOW(KVMIO, 0x49, KvmUserspaceMemoryRegion2);
constexpr long kCapUserMemory2 = 231;
constexpr long kCapGuestMemfd = 234;
constexpr long kCapGuestMemfdFlags = 244;
constexpr uint64_t kGuestMemfdFlagMmap = 1ull << 0;
constexpr uint64_t kGuestMemfdFlagInitShared = 1ull << 1;
constexpr uint32_t kMemGuestMemfd = 1u << 2;

// A buffer holding Header followed by n Entry values, as the kernel expects.
template <class Header, class Entry>
struct VarBuf {
  explicit VarBuf(size_t n) : bytes(sizeof(Header) + n * sizeof(Entry), 0) {}
  Header* header() { return reinterpret_cast<Header*>(bytes.data()); }            // NOLINT
  Entry* entries() { return reinterpret_cast<Entry*>(bytes.data() + sizeof(Header)); }  // NOLINT
  std::vector<uint8_t> bytes;
};

}  // namespace

kvm_cpuid_entry2* CpuidEntries::find(uint32_t function, uint32_t index) {
  for (auto& e : entries) {
    if (e.function != function) continue;
    if ((e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) != 0 && e.index != index) continue;
    return &e;
  }
  return nullptr;
}

KvmResult<Kvm> Kvm::open(const char* path) {
  UniqueFd fd(::open(path, O_RDWR | O_CLOEXEC));
  if (!fd) return errno_error(KvmErrc::kOpen, std::string("open ") + path);
  return adopt(std::move(fd));
}

KvmResult<Kvm> Kvm::adopt(UniqueFd fd) {
  if (!fd) return make_error(KvmErrc::kOpen, "no KVM descriptor");
  const int v = xioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (v != KVM_API_VERSION)
    return make_error(KvmErrc::kApiVersion, "KVM API version " + std::to_string(v) + ", expected 12");
  const int run_size = xioctl(fd.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size <= 0) return ioctl_error("KVM_GET_VCPU_MMAP_SIZE");
  return Kvm(std::move(fd), run_size);
}

int Kvm::check_extension(long cap) const { return xioctl(fd_.get(), KVM_CHECK_EXTENSION, cap); }

KvmResult<CpuidEntries> Kvm::supported_cpuid() const {
  for (size_t n = 128; n <= 4096; n *= 2) {
    VarBuf<CpuidHeader, kvm_cpuid_entry2> buf(n);
    buf.header()->nent = static_cast<uint32_t>(n);
    if (xioctl(fd_.get(), kGetSupportedCpuid, buf.bytes.data()) == 0) {
      CpuidEntries out;
      out.entries.assign(buf.entries(), buf.entries() + std::min<size_t>(buf.header()->nent, n));
      return out;
    }
    if (errno != E2BIG) return ioctl_error("KVM_GET_SUPPORTED_CPUID");
  }
  return make_error(KvmErrc::kIoctl, "KVM_GET_SUPPORTED_CPUID: too many entries");
}

KvmResult<std::vector<uint32_t>> Kvm::msr_index_list() const {
  uint32_t probe = 0;
  if (xioctl(fd_.get(), kGetMsrIndexList, &probe) < 0 && errno != E2BIG) return ioctl_error("KVM_GET_MSR_INDEX_LIST");
  VarBuf<uint32_t, uint32_t> buf(probe);
  *buf.header() = probe;
  if (xioctl(fd_.get(), kGetMsrIndexList, buf.bytes.data()) < 0) return ioctl_error("KVM_GET_MSR_INDEX_LIST");
  return std::vector<uint32_t>(buf.entries(), buf.entries() + std::min(*buf.header(), probe));
}

KvmResult<std::unique_ptr<VmFd>> Kvm::create_vm() const {
  int fd;
  do {
    fd = ::ioctl(fd_.get(), KVM_CREATE_VM, 0);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ioctl_error("KVM_CREATE_VM");
  return std::make_unique<VmFd>(UniqueFd(fd), run_size_);
}

int VmFd::check_extension(long cap) const { return xioctl(fd_.get(), KVM_CHECK_EXTENSION, cap); }

KvmResult<void> VmFd::set_tss_addr(uint64_t addr) {
  if (xioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(addr)) < 0) return ioctl_error("KVM_SET_TSS_ADDR");
  return {};
}
KvmResult<void> VmFd::set_identity_map_addr(uint64_t addr) {
  if (xioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &addr) < 0) return ioctl_error("KVM_SET_IDENTITY_MAP_ADDR");
  return {};
}
KvmResult<void> VmFd::create_irqchip() {
  if (xioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) < 0) return ioctl_error("KVM_CREATE_IRQCHIP");
  return {};
}
KvmResult<void> VmFd::create_pit2() {
  kvm_pit_config cfg{};
  cfg.flags = KVM_PIT_SPEAKER_DUMMY;
  if (xioctl(fd_.get(), KVM_CREATE_PIT2, &cfg) < 0) return ioctl_error("KVM_CREATE_PIT2");
  return {};
}
KvmResult<void> VmFd::set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host) {
  kvm_userspace_memory_region r{};
  r.slot = slot;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);  // NOLINT
  if (xioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &r) < 0) return ioctl_error("KVM_SET_USER_MEMORY_REGION");
  return {};
}
GuestMemfdSupport VmFd::guest_memfd_support() const {
  GuestMemfdSupport s;
  if (check_extension(kCapGuestMemfd) <= 0) {
    s.reason = "KVM_CAP_GUEST_MEMFD = 0 on this host";
    return s;
  }
  if (check_extension(kCapUserMemory2) <= 0) {
    s.reason = "KVM_CAP_USER_MEMORY2 = 0 on this host";
    return s;
  }
  const int flags = check_extension(kCapGuestMemfdFlags);
  constexpr uint64_t kWanted = kGuestMemfdFlagMmap | kGuestMemfdFlagInitShared;
  if (flags < 0 || (static_cast<uint64_t>(flags) & kWanted) != kWanted) {
    s.reason = "KVM_CAP_GUEST_MEMFD_FLAGS = " + std::to_string(flags < 0 ? 0 : flags) +
               " on this host (needs MMAP and INIT_SHARED, Linux 6.18)";
    return s;
  }
  s.usable = true;
  s.flags = kWanted;
  return s;
}

KvmResult<UniqueFd> VmFd::create_guest_memfd(uint64_t size, uint64_t flags) {
  KvmCreateGuestMemfd c{};
  c.size = size;
  c.flags = flags;
  const int fd = xioctl(fd_.get(), kCreateGuestMemfd, &c);
  if (fd < 0) return ioctl_error("KVM_CREATE_GUEST_MEMFD");
  return UniqueFd(fd);
}

KvmResult<void> VmFd::set_user_memory_region2(uint32_t slot, uint64_t gpa, uint64_t size, void* host, int guest_memfd,
                                              uint64_t offset) {
  KvmUserspaceMemoryRegion2 r{};
  r.slot = slot;
  r.flags = kMemGuestMemfd;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);  // NOLINT
  r.guest_memfd_offset = offset;
  r.guest_memfd = static_cast<uint32_t>(guest_memfd);
  if (xioctl(fd_.get(), kSetUserMemoryRegion2, &r) < 0) return ioctl_error("KVM_SET_USER_MEMORY_REGION2");
  return {};
}

KvmResult<void> VmFd::irq_line(uint32_t irq, bool level) {
  kvm_irq_level l{};
  l.irq = irq;
  l.level = level ? 1 : 0;
  if (xioctl(fd_.get(), KVM_IRQ_LINE, &l) < 0) return ioctl_error("KVM_IRQ_LINE");
  return {};
}
KvmResult<void> VmFd::set_clock(uint64_t ns) {
  kvm_clock_data c{};
  c.clock = ns;
  if (xioctl(fd_.get(), KVM_SET_CLOCK, &c) < 0) return ioctl_error("KVM_SET_CLOCK");
  return {};
}
KvmResult<void> VmFd::enable_cap(uint32_t cap, uint64_t arg0) {
  kvm_enable_cap c{};
  c.cap = cap;
  c.args[0] = arg0;
  if (xioctl(fd_.get(), KVM_ENABLE_CAP, &c) < 0) return ioctl_error("KVM_ENABLE_CAP");
  return {};
}

KvmResult<std::unique_ptr<VcpuFd>> VmFd::create_vcpu(int id) {
  int fd;
  do {
    fd = ::ioctl(fd_.get(), KVM_CREATE_VCPU, id);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ioctl_error("KVM_CREATE_VCPU");
  UniqueFd vfd(fd);
  void* p = ::mmap(nullptr, static_cast<size_t>(run_size_), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return errno_error(KvmErrc::kIoctl, "mmap kvm_run");
  return std::make_unique<VcpuFd>(std::move(vfd), MappedRegion(p, static_cast<size_t>(run_size_)), id);
}

KvmResult<void> VmFd::ioeventfd(uint64_t addr, uint32_t len, uint64_t datamatch, int fd, bool deassign) {
  kvm_ioeventfd e{};
  e.addr = addr;
  e.len = len;
  e.datamatch = datamatch;
  e.fd = fd;
  e.flags = KVM_IOEVENTFD_FLAG_DATAMATCH | (deassign ? KVM_IOEVENTFD_FLAG_DEASSIGN : 0);
  if (xioctl(fd_.get(), KVM_IOEVENTFD, &e) < 0) return ioctl_error("KVM_IOEVENTFD");
  return {};
}
KvmResult<void> VmFd::irqfd(uint32_t gsi, int fd, bool deassign) {
  kvm_irqfd e{};
  e.fd = static_cast<uint32_t>(fd);
  e.gsi = gsi;
  e.flags = deassign ? KVM_IRQFD_FLAG_DEASSIGN : 0;
  if (xioctl(fd_.get(), KVM_IRQFD, &e) < 0) return ioctl_error("KVM_IRQFD");
  return {};
}

int VcpuFd::run_once() { return xioctl(fd_.get(), KVM_RUN, 0) < 0 ? errno : 0; }

KvmResult<kvm_regs> VcpuFd::get_regs() const {
  kvm_regs r{};
  if (xioctl(fd_.get(), KVM_GET_REGS, &r) < 0) return ioctl_error("KVM_GET_REGS");
  return r;
}
KvmResult<void> VcpuFd::set_regs(const kvm_regs& r) {
  if (xioctl(fd_.get(), KVM_SET_REGS, &r) < 0) return ioctl_error("KVM_SET_REGS");
  return {};
}
KvmResult<kvm_sregs> VcpuFd::get_sregs() const {
  kvm_sregs s{};
  if (xioctl(fd_.get(), KVM_GET_SREGS, &s) < 0) return ioctl_error("KVM_GET_SREGS");
  return s;
}
KvmResult<void> VcpuFd::set_sregs(const kvm_sregs& s) {
  if (xioctl(fd_.get(), KVM_SET_SREGS, &s) < 0) return ioctl_error("KVM_SET_SREGS");
  return {};
}
KvmResult<void> VcpuFd::set_fpu(const kvm_fpu& f) {
  if (xioctl(fd_.get(), KVM_SET_FPU, &f) < 0) return ioctl_error("KVM_SET_FPU");
  return {};
}
KvmResult<void> VcpuFd::set_cpuid(const CpuidEntries& c) {
  VarBuf<CpuidHeader, kvm_cpuid_entry2> buf(c.entries.size());
  buf.header()->nent = static_cast<uint32_t>(c.entries.size());
  std::memcpy(buf.entries(), c.entries.data(), c.entries.size() * sizeof(kvm_cpuid_entry2));
  if (xioctl(fd_.get(), kSetCpuid2, buf.bytes.data()) < 0) return ioctl_error("KVM_SET_CPUID2");
  return {};
}
KvmResult<void> VcpuFd::set_msrs(std::span<const MsrEntry> msrs) {
  VarBuf<MsrsHeader, kvm_msr_entry> buf(msrs.size());
  buf.header()->nmsrs = static_cast<uint32_t>(msrs.size());
  for (size_t i = 0; i < msrs.size(); ++i) {
    buf.entries()[i].index = msrs[i].index;
    buf.entries()[i].data = msrs[i].data;
  }
  const int n = xioctl(fd_.get(), kSetMsrs, buf.bytes.data());
  if (n < 0) return ioctl_error("KVM_SET_MSRS");
  if (static_cast<size_t>(n) != msrs.size()) {
    char idx[32];
    std::snprintf(idx, sizeof idx, "%#x", msrs[static_cast<size_t>(n)].index);
    return make_error(KvmErrc::kIoctl, std::string("KVM_SET_MSRS rejected MSR ") + idx);
  }
  return {};
}
KvmResult<uint64_t> VcpuFd::get_msr(uint32_t index) const {
  VarBuf<MsrsHeader, kvm_msr_entry> buf(1);
  buf.header()->nmsrs = 1;
  buf.entries()[0].index = index;
  if (xioctl(fd_.get(), kGetMsrs, buf.bytes.data()) != 1) return ioctl_error("KVM_GET_MSRS");
  return static_cast<uint64_t>(buf.entries()[0].data);
}
KvmResult<kvm_mp_state> VcpuFd::get_mp_state() const {
  kvm_mp_state s{};
  if (xioctl(fd_.get(), KVM_GET_MP_STATE, &s) < 0) return ioctl_error("KVM_GET_MP_STATE");
  return s;
}
KvmResult<void> VcpuFd::set_mp_state(uint32_t state) {
  kvm_mp_state s{};
  s.mp_state = state;
  if (xioctl(fd_.get(), KVM_SET_MP_STATE, &s) < 0) return ioctl_error("KVM_SET_MP_STATE");
  return {};
}
KvmResult<kvm_lapic_state> VcpuFd::get_lapic() const {
  kvm_lapic_state l{};
  if (xioctl(fd_.get(), KVM_GET_LAPIC, &l) < 0) return ioctl_error("KVM_GET_LAPIC");
  return l;
}
KvmResult<void> VcpuFd::set_lapic(const kvm_lapic_state& l) {
  if (xioctl(fd_.get(), KVM_SET_LAPIC, &l) < 0) return ioctl_error("KVM_SET_LAPIC");
  return {};
}
KvmResult<kvm_vcpu_events> VcpuFd::get_events() const {
  kvm_vcpu_events e{};
  if (xioctl(fd_.get(), KVM_GET_VCPU_EVENTS, &e) < 0) return ioctl_error("KVM_GET_VCPU_EVENTS");
  return e;
}

KvmResult<uint64_t> VcpuFd::translate(uint64_t linear) const {
  kvm_translation t{};
  t.linear_address = linear;
  if (xioctl(fd_.get(), KVM_TRANSLATE, &t) < 0) return ioctl_error("KVM_TRANSLATE");
  if (t.valid == 0) return make_error(KvmErrc::kIoctl, "linear address not mapped");
  return static_cast<uint64_t>(t.physical_address);
}
KvmResult<kvm_fpu> VcpuFd::get_fpu() const {
  kvm_fpu f{};
  if (xioctl(fd_.get(), KVM_GET_FPU, &f) < 0) return ioctl_error("KVM_GET_FPU");
  return f;
}

}  // namespace azote::kvm

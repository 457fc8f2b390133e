#include "hv/vm.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <filesystem>
#include <set>
#include <system_error>

#include "acpi/acpi.hpp"
#include "attest/attest.hpp"
#include "eif/eif.hpp"
#include "base/hex.hpp"
#include "base/parse.hpp"
#include "base/log.hpp"
#include "hv/exit_status.hpp"
#include "hv/vhost_user_backend.hpp"
#include "loader/load.hpp"
#include "sandbox/seccomp.hpp"
#include "x86/boot_cpu.hpp"
#include "x86/cpuid.hpp"
#include "x86/layout.hpp"

#ifdef AZOTE_HAVE_BUILTIN_GUEST
extern "C" const uint8_t azote_builtin_guest_start[];
extern "C" const uint8_t azote_builtin_guest_end[];
#endif

namespace azote::hv {
namespace {

constexpr int kKickSignal = SIGUSR1;

Unexpected<VmError> host_error(const std::string& what, const kvm::KvmError& e) {
  return make_error(VmErrc::kHost, what + ": " + e.message());
}

std::string hexs(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "%#" PRIx64, v);
  return b;
}

// Whether two socket paths name the same socket: the same path once normalised, or
// the same inode.
bool same_socket(const std::string& a, const std::string& b) {
  namespace fs = std::filesystem;
  if (fs::path(a).lexically_normal() == fs::path(b).lexically_normal()) return true;
  struct stat sa{}, sb{};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// A kernel or initrd: a path, or "fd:N" (a descriptor the launcher opened; closed after).
loader::LoaderResult<std::vector<uint8_t>> read_image(const std::string& where, size_t max) {
  if (const auto fd = parse_fd_ref(where)) {
    UniqueFd owned(*fd);
    return loader::read_fd(owned.get(), where, max);
  }
  return loader::read_file(where, max);
}

const char* mode_name(const kvm_sregs& s) {
  if ((s.cr0 & 1) == 0) return "real";
  if ((s.efer & (1u << 10)) != 0) return s.cs.l != 0 ? "64-bit" : "compatibility";
  return "protected";
}

}  // namespace

Vm::~Vm() {
  stopping_ = true;
  for (auto& v : vcpus_) {
    if (v->thread.joinable()) {
      v->fd->run()->immediate_exit = 1;
      pthread_kill(v->thread.native_handle(), kKickSignal);
      v->thread.join();
    }
  }
}

Result<std::unique_ptr<Vm>, VmError> Vm::create(const VmConfig& cfg) {
  std::unique_ptr<Vm> vm(new Vm(cfg));
  AZOTE_TRYV(vm->setup());
  return vm;
}

Result<void, VmError> Vm::setup() {
  auto kvm = cfg_.kvm_fd >= 0 ? kvm::Kvm::adopt(UniqueFd(cfg_.kvm_fd)) : kvm::Kvm::open();
  if (!kvm.ok()) return make_error(VmErrc::kHost, "cannot use KVM: " + kvm.error().message());
  kvm_.emplace(std::move(kvm).value());
  for (auto [cap, name] : {std::pair{KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"}, {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
                           {KVM_CAP_PIT2, "KVM_CAP_PIT2"}, {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
                           {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"}, {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"}}) {
    if (kvm_->check_extension(cap) <= 0) return make_error(VmErrc::kHost, std::string("KVM lacks ") + name);
  }
  const int max_vcpus = kvm_->check_extension(KVM_CAP_MAX_VCPUS);
  if (max_vcpus > 0 && cfg_.vcpus > static_cast<uint32_t>(max_vcpus))
    return make_error(VmErrc::kHost, "--vcpus " + std::to_string(cfg_.vcpus) + " exceeds this host's KVM limit of " +
                                         std::to_string(max_vcpus));

  auto vm = kvm_->create_vm();
  if (!vm.ok()) return host_error("create VM", vm.error());
  vm_ = std::move(vm).value();
  if (auto r = vm_->set_tss_addr(x86::kKvmTssAddr); !r.ok()) return host_error("set TSS address", r.error());
  if (auto r = vm_->set_identity_map_addr(x86::kKvmIdentityMapAddr); !r.ok()) return host_error("set identity map", r.error());
  if (auto r = vm_->create_irqchip(); !r.ok()) return host_error("create in-kernel irqchip", r.error());
  if (cfg_.pit) {
    if (auto r = vm_->create_pit2(); !r.ok()) return host_error("create in-kernel PIT", r.error());
  }

  AZOTE_TRYV(read_kernel());
  AZOTE_TRYV(plan_io_window());
  AZOTE_TRYV(create_memory());

  AZOTE_TRYV(load_kernel());
  for (const auto& d : cfg_.devices) AZOTE_TRYV(attach_device(d));

  auto console = Console::open(cfg_.console, cfg_.console_max);
  if (!console.ok()) return make_error(VmErrc::kConsole, console.error().message());
  console_.emplace(std::move(console).value());
  platform_ = std::make_unique<Platform>(
      [this](uint8_t b) { console_->write(std::span(&b, 1)); },
      [this](uint32_t irq, bool level) {
        if (auto r = vm_->irq_line(irq, level); !r.ok() && !stopping_) LOG_WARN("irq %u: %s", irq, r.error().message().c_str());
      });

  auto cpuid = kvm_->supported_cpuid();
  if (!cpuid.ok()) return host_error("read supported CPUID", cpuid.error());
  cpuid_ = std::move(cpuid).value();
  auto msr_list = kvm_->msr_index_list();
  if (!msr_list.ok()) return host_error("read MSR list", msr_list.error());
  msrs_ = x86::boot_msrs(*msr_list);

  for (uint32_t i = 0; i < cfg_.vcpus; ++i) {
    auto v = std::make_unique<Vcpu>();
    auto fd = vm_->create_vcpu(static_cast<int>(i));
    if (!fd.ok()) return host_error("create vCPU " + std::to_string(i), fd.error());
    v->fd = std::move(fd).value();
    AZOTE_TRYV(setup_vcpu(*v, i == 0));
    vcpus_.push_back(std::move(v));
  }
  exit_event_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!exit_event_) return make_error(VmErrc::kHost, "eventfd", errno);
  return {};
}

Result<void, VmError> Vm::create_memory() {
  using P = VmConfig::PrivateMemory;
  const auto specs = x86::ram_regions(cfg_.memory, cfg_.io_window_size);
  // guest_memfd only behind an I/O window: without one, cards map all of RAM and this
  // process reads the rings in it, so private memory would not be private anyway.
  const kvm::GuestMemfdSupport support = vm_->guest_memfd_support();
  std::string why_not;
  if (!support.usable) why_not = support.reason;
  else if (cfg_.io_window_size == 0) why_not = "the guest has no I/O window (its cards map all of RAM)";
  if (cfg_.private_memory == P::kGuestMemfd && !why_not.empty())
    return make_error(VmErrc::kHost, "--private-memory guest_memfd: not available: " + why_not);
  const bool gmem = cfg_.private_memory != P::kMemfd && why_not.empty();
  UniqueFd private_fd;
  if (gmem) {
    auto fd = vm_->create_guest_memfd(GuestMemory::private_bytes(specs), support.flags);
    if (!fd.ok()) return host_error("create the guest_memfd for private memory", fd.error());
    private_fd = std::move(fd).value();
    private_memory_why_ = cfg_.private_memory == P::kGuestMemfd ? "--private-memory guest_memfd" : "KVM offers it";
  } else {
    private_memory_why_ = cfg_.private_memory == P::kMemfd ? "--private-memory memfd" : why_not;
  }
  auto mem = GuestMemory::create(specs, std::move(private_fd));
  if (!mem.ok()) return make_error(VmErrc::kHost, "guest memory: " + mem.error().message());
  mem_.emplace(std::move(mem).value());
  uint32_t slot = 0;
  for (const auto& r : mem_->regions()) {
    auto s = gmem && !r.io
                 ? vm_->set_user_memory_region2(slot, r.start.raw, r.size, r.host, mem_->memfd(), r.file_offset)
                 : vm_->set_user_memory_region(slot, r.start.raw, r.size, r.host);
    if (!s.ok()) return host_error("register guest memory", s.error());
    ++slot;
  }
  if (!cfg_.tpm_socket.empty()) {
    // The TPM's command/response buffer: a page of this process's own, mapped into the
    // guest after the CRB window (tpm_crb.hpp), so that the guest's accesses to it do
    // not exit. Not guest RAM: no card is given it, and it holds only TPM commands.
    void* page = ::mmap(nullptr, TpmCrb::kBufferSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return make_error(VmErrc::kHost, "--tpm: cannot map the command buffer", errno);
    tpm_page_ = MappedRegion(page, TpmCrb::kBufferSize);
    if (auto s = vm_->set_user_memory_region(slot, TpmCrb::kBufferAddr, TpmCrb::kBufferSize, page); !s.ok())
      return host_error("register the TPM command buffer", s.error());
  }
  LOG_INFO("private memory: %s (%s)", gmem ? "guest_memfd" : "memfd", private_memory_why_.c_str());
  return {};
}

Result<void, VmError> Vm::attach_device(const DeviceConfig& d) {
  const size_t i = devices_.size();
  if (i >= kMaxDevices) return make_error(VmErrc::kDevice, "more than " + std::to_string(kMaxDevices) + " devices");
  const uint64_t base = x86::kVirtioMmioBase + i * x86::kVirtioMmioStride;
  const uint32_t gsi = x86::kVirtioFirstGsi + static_cast<uint32_t>(i);
  auto backend = VhostUserBackend::create(d, *vm_, *mem_, base, gsi);
  if (!backend.ok()) return make_error(VmErrc::kDevice, backend.error());
  cards_.push_back(backend->get());
  devices_.push_back(std::make_unique<VirtioMmioDevice>(base, gsi, std::move(backend).value()));
  return {};
}

Result<void, VmError> Vm::read_kernel() {
  if (cfg_.builtin()) {
#ifdef AZOTE_HAVE_BUILTIN_GUEST
    image_ = std::span(azote_builtin_guest_start, azote_builtin_guest_end);
#else
    return make_error(VmErrc::kImage, "--kernel builtin:" + cfg_.builtin_name() + ": this azote-hv was built without the built-in guest");
#endif
  } else if (!cfg_.eif.empty()) {
    return read_eif();
  } else {
    auto f = read_image(cfg_.kernel, loader::kMaxImageBytes);
    if (!f.ok()) return make_error(VmErrc::kImage, "--kernel: " + f.error().message());
    owned_image_ = std::move(f).value();
    image_ = owned_image_;
  }
  return {};
}

Result<void, VmError> Vm::read_eif() {
  // An enclave image is kernel + ramdisks: up to 4 GiB of them, all in guest memory.
  auto f = read_image(cfg_.eif, 4ull << 30);
  if (!f.ok()) return make_error(VmErrc::kImage, "--eif: " + f.error().message());
  owned_image_ = std::move(f).value();
  auto img = eif::parse(owned_image_);
  if (!img.ok()) return make_error(VmErrc::kImage, "--eif " + cfg_.eif + ": " + img.error().message());
  std::optional<eif::Signature> sig;
  if (img->signature) {
    auto s = eif::read_signature(*img->signature);
    if (!s.ok()) return make_error(VmErrc::kImage, "--eif " + cfg_.eif + ": " + s.error().message());
    sig = std::move(*s);
  }
  const eif::Measurements m = eif::measure(*img, sig ? &*sig : nullptr);
  if (sig) {
    if (auto v = eif::verify_signature(*sig, m.pcr0, ::time(nullptr)); !v.ok())
      return make_error(VmErrc::kImage, "--eif " + cfg_.eif + ": " + v.error().message());
  }
  image_ = img->kernel;
  cfg_.cmdline.assign(img->cmdline.begin(), img->cmdline.end());
  size_t total = 0;
  for (const auto& r : img->ramdisks) total += r.size();
  eif_initrd_.reserve(total);
  for (const auto& r : img->ramdisks) eif_initrd_.insert(eif_initrd_.end(), r.begin(), r.end());
  eif_pcrs_ = control::Json::object();
  eif_pcrs_["0"] = to_hex(m.pcr0);
  eif_pcrs_["1"] = to_hex(m.pcr1);
  eif_pcrs_["2"] = to_hex(m.pcr2);
  if (m.pcr8) eif_pcrs_["8"] = to_hex(*m.pcr8);
  LOG_INFO("boot: enclave image %s, version %u, %zu ramdisk(s), %s, PCR0 %s", cfg_.eif.c_str(), img->version,
           img->ramdisks.size(), sig ? "signed" : "unsigned", to_hex(m.pcr0).c_str());
  return {};
}

Result<void, VmError> Vm::plan_io_window() {
  if (cfg_.io_window == 0) return {};
  // Only a kernel that keeps its virtqueues and buffers in the window gets one: any
  // other would hand cards addresses outside it.
  bool supported = false;
  if (loader::detect(image_) == loader::ImageKind::kElf)
    if (auto elf = loader::parse_elf(image_); elf.ok()) supported = elf->io_window;
  if (!supported) {
    if (cfg_.io_window != VmConfig::kIoWindowAuto)
      LOG_WARN("--io-window: this kernel does not declare an I/O window (no Azote note); cards map all of guest RAM");
    return {};
  }
  uint64_t size = cfg_.io_window;
  const uint64_t low = x86::low_ram_end(cfg_.memory);
  // Half of low memory, at most 1 GiB: room for a benchmark's queue depth of 1 MiB
  // buffers. The size exposes nothing by itself: only what the guest puts there is seen.
  if (size == VmConfig::kIoWindowAuto) size = std::min<uint64_t>(low / 2 & ~((1ull << 20) - 1), 1ull << 30);
  if (size > low / 2)
    return make_error(VmErrc::kHost, "--io-window " + std::to_string(size >> 20) + "M is more than half of low memory (" +
                                         std::to_string(low >> 20) + "M)");
  cfg_.io_window_size = size;
  cfg_.io_window_start = low - size;
  LOG_INFO("boot: I/O window %#" PRIx64 "-%#" PRIx64 " (%" PRIu64 " MiB): the only guest memory cards map", cfg_.io_window_start,
           cfg_.io_window_start + size, size >> 20);
  return {};
}

Result<void, VmError> Vm::load_kernel() {
  const std::span<const uint8_t> image = image_;
  std::vector<uint8_t> initrd;
  loader::BootSpec spec;
  spec.kernel = image;
  spec.cmdline = cfg_.effective_cmdline();
  spec.mem_size = cfg_.memory;
  spec.e820 = x86::e820_map(cfg_.memory);
  if (!cfg_.initrd.empty()) {
    auto f = read_image(cfg_.initrd, 2ull << 30);
    if (!f.ok()) return make_error(VmErrc::kImage, "--initrd: " + f.error().message());
    initrd = std::move(f).value();
    spec.initrd = std::span<const uint8_t>(initrd);
  } else if (!cfg_.eif.empty()) {
    initrd = std::move(eif_initrd_);
    spec.initrd = std::span<const uint8_t>(initrd);
  }

  if (auto r = x86::write_boot_tables(*mem_); !r.ok()) return make_error(VmErrc::kHost, "boot tables: " + r.error().message());
  const acpi::Tables tables = acpi::build(x86::kAcpiAddr, cfg_.vcpus, x86::kLapicAddr, x86::kIoapicAddr,
                                          cfg_.tpm_socket.empty() ? 0 : TpmCrb::kControlArea);
  if (tables.bytes.size() > x86::kAcpiEnd - x86::kAcpiAddr) return make_error(VmErrc::kHost, "ACPI tables too large");
  if (auto r = mem_->write(GuestAddress(tables.base), tables.bytes); !r.ok())
    return make_error(VmErrc::kHost, "ACPI tables: " + r.error().message());
  spec.rsdp_addr = tables.rsdp_addr();

  {
    // The image's command line: the program (built-in guest) or --cmdline, without what
    // the platform appends (I/O window, virtio-mmio devices), so that attaching a card
    // does not change the image's identity.
    const std::string own = cfg_.builtin() ? "azote.run=" + cfg_.builtin_name() + (cfg_.cmdline.empty() ? "" : " " + cfg_.cmdline)
                                           : cfg_.cmdline;
    const std::span<const uint8_t> c(reinterpret_cast<const uint8_t*>(own.data()), own.size());
    const std::span<const uint8_t> ramdisk(initrd);
    // One pass over the image: its digest, then with the cmdline (PCR 1), then with the
    // initrd (PCR 0), each a prefix of the same stream.
    attest::Sha384 stream;
    stream.update(image);
    const attest::Pcr kernel = stream.digest();
    stream.update(c);
    const attest::Pcr kernel_cmdline = stream.digest();
    stream.update(ramdisk);
    const attest::Pcr rd = attest::sha384_of({ramdisk});
    control::Json pcrs = control::Json::object();
    pcrs["0"] = to_hex(attest::extend(attest::Pcr{}, stream.digest()));
    pcrs["1"] = to_hex(attest::extend(attest::Pcr{}, kernel_cmdline));
    pcrs["2"] = to_hex(attest::extend(attest::Pcr{}, rd));
    measurements_ = control::Json::object();
    measurements_["kernel_sha384"] = to_hex(kernel);
    measurements_["initrd_sha384"] = initrd.empty() ? control::Json() : control::Json(to_hex(rd));
    measurements_["cmdline"] = own;
    // An enclave image's registers are the EIF's (ENCLAVES.md §2: PCR1 and PCR2 split
    // the ramdisks into boot and application), as build-enclave printed them.
    measurements_["pcrs"] = cfg_.eif.empty() ? std::move(pcrs) : eif_pcrs_;
    if (!cfg_.eif.empty()) measurements_["eif"] = true;
    if (!cfg_.tpm_socket.empty()) {
      // What boot_tpm() extends, in every algorithm a TPM bank may use.
      std::vector<std::tuple<uint32_t, const char*, std::span<const uint8_t>>> parts = {{tpm::kPcrKernel, "kernel", image}};
      if (!cfg_.initrd.empty()) parts.emplace_back(tpm::kPcrInitrd, "initrd", ramdisk);
      parts.emplace_back(tpm::kPcrCmdline, "cmdline", c);
      for (const auto& [pcr, what, data] : parts) {
        auto e = tpm::measure(pcr, what, data);
        if (!e) return make_error(VmErrc::kHost, "--tpm: " + e.error().message());
        tpm_events_.push_back(std::move(e).value());
      }
    }
  }
  auto plan = loader::load(*mem_, spec);
  if (!plan.ok()) {
    const std::string what = cfg_.builtin() ? "built-in guest" : !cfg_.eif.empty() ? "of " + cfg_.eif : cfg_.kernel;
    return make_error(VmErrc::kImage, "--kernel " + what + ": " + plan.error().message());
  }
  entry_ = plan->entry;
  boot_info_ = plan->boot_info;
  // What the loader allowed for the command line, for the one "start" rewrites with
  // the devices attached over the control socket.
  cmdline_max_ = x86::kCmdlineMax - 1;
  if (loader::detect(image) == loader::ImageKind::kBzImage) {
    if (auto bz = loader::parse_bzimage(image); bz.ok()) cmdline_max_ = std::min<uint64_t>(cmdline_max_, bz->cmdline_size);
  }
  entry_mode_ = static_cast<int>(plan->mode);
  LOG_INFO("boot: %s entry %#" PRIx64 " boot info %#" PRIx64 ", %u vCPUs, %" PRIu64 " MiB", plan->protocol, entry_,
           boot_info_, cfg_.vcpus, cfg_.memory >> 20);
  // Loaded: the file's copy is not needed any more.
  image_ = {};
  owned_image_ = std::vector<uint8_t>();
  eif_initrd_ = std::vector<uint8_t>();
  return {};
}

Result<void, VmError> Vm::setup_vcpu(Vcpu& v, bool boot) {
  auto& fd = *v.fd;
  kvm::CpuidEntries c = cpuid_;
  x86::sanitize_cpuid(c, static_cast<uint32_t>(fd.id()), cfg_.vcpus);
  if (auto r = fd.set_cpuid(c); !r.ok()) return host_error("set CPUID", r.error());
  if (auto r = fd.set_msrs(msrs_); !r.ok()) return host_error("set MSRs", r.error());
  // LINT0 = ExtINT (legacy PIC), LINT1 = NMI, as firmware leaves them.
  auto lapic = fd.get_lapic();
  if (!lapic.ok()) return host_error("read LAPIC", lapic.error());
  auto set_lvt = [&](size_t off, uint32_t mode) {
    uint32_t v32;
    std::memcpy(&v32, &lapic->regs[off], 4);
    v32 = (v32 & ~0x700u) | (mode << 8);
    std::memcpy(&lapic->regs[off], &v32, 4);
  };
  set_lvt(0x350, 7);
  set_lvt(0x360, 4);
  if (auto r = fd.set_lapic(*lapic); !r.ok()) return host_error("set LAPIC", r.error());
  if (!boot) return {};  // APs wait for INIT/SIPI from the guest

  auto sregs = fd.get_sregs();
  if (!sregs.ok()) return host_error("read sregs", sregs.error());
  if (auto r = fd.set_sregs(x86::boot_sregs(*sregs, static_cast<x86::EntryMode>(entry_mode_))); !r.ok())
    return host_error("set sregs", r.error());
  if (auto r = fd.set_regs(x86::boot_regs(entry_, boot_info_)); !r.ok()) return host_error("set regs", r.error());
  kvm_fpu fpu{};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  if (auto r = fd.set_fpu(fpu); !r.ok()) return host_error("set FPU", r.error());
  return {};
}

void Vm::request_exit(int status) {
  int expected = -1;
  exit_status_.compare_exchange_strong(expected, status);
  stopping_ = true;
  for (auto& v : vcpus_) v->fd->run()->immediate_exit = 1;
  for (auto& v : vcpus_)
    if (v->started) pthread_kill(v->thread.native_handle(), kKickSignal);
  const uint64_t one = 1;
  if (exit_event_) (void)::write(exit_event_.get(), &one, sizeof one);
}

void Vm::vcpu_loop(Vcpu& v) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kKickSignal);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  char name[16];
  std::snprintf(name, sizeof name, "vcpu%d", v.fd->id());
  // Before the first KVM_RUN: from here on the guest drives this thread.
  if (auto s = sandbox::enter_thread("vcpu", name); !s) {
    std::fprintf(stderr, "azote-hv: error: vCPU %d: %s\n", v.fd->id(), s.error().message().c_str());
    request_exit(kExitHostSetup);
    return;
  }
  while (!stopping_) {
    const int err = v.fd->run_once();
    if (err == EINTR || err == EAGAIN) {
      v.exits.interrupted.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (err != 0) {
      fatal(v, kExitInternalError, std::string("KVM_RUN failed: ") + std::strerror(err));
      break;
    }
    if (!handle_exit(v)) break;
  }
  getrusage(RUSAGE_THREAD, &v.cpu);
}

bool Vm::handle_exit(Vcpu& v) {
  kvm_run* run = v.fd->run();
  const uint32_t reason = run->exit_reason;
  (reason == KVM_EXIT_IO ? v.exits.io : reason == KVM_EXIT_MMIO ? v.exits.mmio : v.exits.other)
      .fetch_add(1, std::memory_order_relaxed);
  switch (reason) {
    case KVM_EXIT_IO: {
      const auto& io = run->io;
      const uint64_t bytes = static_cast<uint64_t>(io.size) * io.count;
      // The kernel fills these, but a bad offset would make us scribble: check anyway.
      if ((io.size != 1 && io.size != 2 && io.size != 4) || io.data_offset < sizeof(kvm_run) ||
          io.data_offset + bytes > v.fd->run_size()) {
        fatal(v, kExitInternalError, "malformed KVM_EXIT_IO from the kernel");
        return false;
      }
      auto* data = reinterpret_cast<uint8_t*>(run) + io.data_offset;  // NOLINT
      const bool is_write = io.direction == KVM_EXIT_IO_OUT;
      for (uint32_t i = 0; i < io.count; ++i) {
        const PortResult r = platform_->io(io.port, is_write, std::span(data + i * io.size, io.size));
        if (r.action == PortAction::kExit) {
          LOG_INFO("vCPU %d: guest requested exit with status %d (port %#x)", v.fd->id(), r.exit_status, io.port);
          request_exit(r.exit_status);
          return false;
        }
        if (r.action == PortAction::kAbsent) {
          static log::RateLimit limit(8, std::chrono::seconds(10));
          if (limit.allow()) LOG_INFO("vCPU %d: %s port %#x: no such legacy device", v.fd->id(), is_write ? "write to" : "read from", io.port);
          continue;
        }
        if (r.action == PortAction::kUnhandled) {
          char what[96];
          uint32_t value = 0;
          std::memcpy(&value, data + i * io.size, io.size);
          if (is_write)
            std::snprintf(what, sizeof what, "unhandled port I/O: %u-byte write of %#x to port %#x", io.size, value, io.port);
          else
            std::snprintf(what, sizeof what, "unhandled port I/O: %u-byte read from port %#x", io.size, io.port);
          fatal(v, kExitUnhandledIo, what);
          return false;
        }
      }
      return true;
    }
    case KVM_EXIT_MMIO: {
      const auto& mmio = run->mmio;
      if (mmio.len <= sizeof(mmio.data)) {
        if (tpm_ && tpm_->contains(mmio.phys_addr, mmio.len)) {
          tpm_->access(mmio.phys_addr, mmio.is_write != 0, std::span(run->mmio.data, mmio.len));
          return true;
        }
        for (auto& d : devices_) {
          if (!d->contains(mmio.phys_addr, mmio.len)) continue;
          d->access(mmio.phys_addr, mmio.is_write != 0, std::span(run->mmio.data, mmio.len));
          return true;
        }
      }
      char what[96];
      std::snprintf(what, sizeof what, "unhandled MMIO: %u-byte %s at guest-physical %#llx", run->mmio.len,
                    run->mmio.is_write != 0 ? "write" : "read", static_cast<unsigned long long>(run->mmio.phys_addr));
      fatal(v, kExitUnhandledMmio, what);
      return false;
    }
    case KVM_EXIT_SHUTDOWN:
      fatal(v, kExitTripleFault, "triple fault (KVM_EXIT_SHUTDOWN)");
      return false;
    case KVM_EXIT_INTERNAL_ERROR: {
      const uint32_t sub = run->internal.suberror;
      if (sub == KVM_INTERNAL_ERROR_EMULATION) {
        fatal(v, kExitEmulationFailure, "KVM could not emulate an instruction (KVM_INTERNAL_ERROR_EMULATION)");
      } else {
        const char* names[] = {"?", "emulation", "simultaneous exception", "delivery event", "unexpected exit reason"};
        fatal(v, kExitInternalError,
              std::string("KVM internal error: ") + (sub < 5 ? names[sub] : "suberror " + std::to_string(sub)));
      }
      return false;
    }
    case KVM_EXIT_FAIL_ENTRY:
      fatal(v, kExitEntryFailure,
            "VM entry failed (hardware reason " + hexs(run->fail_entry.hardware_entry_failure_reason) + ")");
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN || run->system_event.type == KVM_SYSTEM_EVENT_RESET) {
        request_exit(kExitOk);
        return false;
      }
      fatal(v, kExitUnexpected, "system event " + std::to_string(run->system_event.type));
      return false;
    case KVM_EXIT_HLT:
    case KVM_EXIT_INTR:
    case KVM_EXIT_IRQ_WINDOW_OPEN:
      return true;
    default:
      fatal(v, kExitUnexpected, "unexpected KVM exit reason " + std::to_string(run->exit_reason));
      return false;
  }
}

std::string Vm::instruction_bytes(Vcpu& v, uint64_t rip, const kvm_sregs& s) {
  if (!cfg_.debug_guest) return "not read (azote-hv reads no guest memory after boot; --debug-guest reads them)";
  uint64_t linear = rip;
  if (std::string_view(mode_name(s)) != "64-bit") linear = (s.cs.base + rip) & 0xffffffffull;
  std::string out;
  uint8_t buf[15];
  size_t got = 0;
  while (got < sizeof buf) {
    uint64_t gpa;
    if ((s.cr0 & (1ull << 31)) != 0) {
      auto t = v.fd->translate(linear + got);
      if (!t.ok()) break;
      gpa = *t;
    } else {
      gpa = linear + got;
    }
    const size_t chunk = std::min<size_t>(sizeof buf - got, 4096 - ((linear + got) & 0xfff));
    if (!mem_->read(GuestAddress(gpa), std::span(buf + got, chunk)).ok()) break;
    got += chunk;
  }
  if (got == 0) return "(not readable)";
  char b[4];
  for (size_t i = 0; i < got; ++i) {
    std::snprintf(b, sizeof b, "%02x", buf[i]);
    if (i != 0) out += ' ';
    out += b;
  }
  return out;
}

void Vm::fatal(Vcpu& v, int status, const std::string& reason) {
  auto regs = v.fd->get_regs();
  auto sregs = v.fd->get_sregs();
  if (!regs.ok() || !sregs.ok()) {
    std::fprintf(stderr, "azote-hv: vCPU %d: %s (registers unavailable)\n", v.fd->id(), reason.c_str());
    request_exit(status);
    return;
  }
  const auto& r = *regs;
  const auto& s = *sregs;
  std::fprintf(stderr, "azote-hv: vCPU %d: %s at rip=%#llx (cs=%#x, %s mode, cpl %d); instruction bytes: %s\n", v.fd->id(),
               reason.c_str(), static_cast<unsigned long long>(r.rip), s.cs.selector, mode_name(s), s.cs.dpl,
               instruction_bytes(v, r.rip, s).c_str());
  std::fflush(stderr);

  std::FILE* f = log::sink();
  std::fprintf(f, "azote-hv: vCPU %d register dump:\n", v.fd->id());
  auto q = [](uint64_t x) { return static_cast<unsigned long long>(x); };
  std::fprintf(f, "  rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx\n", q(r.rax), q(r.rbx), q(r.rcx), q(r.rdx));
  std::fprintf(f, "  rsi=%016llx rdi=%016llx rbp=%016llx rsp=%016llx\n", q(r.rsi), q(r.rdi), q(r.rbp), q(r.rsp));
  std::fprintf(f, "  r8 =%016llx r9 =%016llx r10=%016llx r11=%016llx\n", q(r.r8), q(r.r9), q(r.r10), q(r.r11));
  std::fprintf(f, "  r12=%016llx r13=%016llx r14=%016llx r15=%016llx\n", q(r.r12), q(r.r13), q(r.r14), q(r.r15));
  std::fprintf(f, "  rip=%016llx rflags=%016llx\n", q(r.rip), q(r.rflags));
  auto seg = [&](const char* n, const kvm_segment& g) {
    std::fprintf(f, "  %s=%04x base=%016llx limit=%08x type=%x dpl=%u l=%u db=%u p=%u\n", n, g.selector, q(g.base), g.limit,
                 g.type, g.dpl, g.l, g.db, g.present);
  };
  seg("cs", s.cs); seg("ss", s.ss); seg("ds", s.ds); seg("es", s.es); seg("fs", s.fs); seg("gs", s.gs);
  seg("tr", s.tr); seg("ldt", s.ldt);
  std::fprintf(f, "  gdt=%016llx/%x idt=%016llx/%x\n", q(s.gdt.base), s.gdt.limit, q(s.idt.base), s.idt.limit);
  std::fprintf(f, "  cr0=%016llx cr2=%016llx cr3=%016llx cr4=%016llx cr8=%llx\n", q(s.cr0), q(s.cr2), q(s.cr3), q(s.cr4),
               q(s.cr8));
  std::fprintf(f, "  efer=%016llx apic_base=%016llx\n", q(s.efer), q(s.apic_base));
  if (auto e = v.fd->get_events(); e.ok()) {
    std::fprintf(f, "  exception: injected=%u nr=%u has_error=%u error=%#x; nmi pending=%u\n", e->exception.injected,
                 e->exception.nr, e->exception.has_error_code, e->exception.error_code, e->nmi.pending);
  }
  std::fflush(f);
  request_exit(status);
}

void Vm::watch_cards(std::vector<pollfd>* fds, int* timeout_ms) {
  for (size_t i = 0; i < cards_.size(); ++i) {
    std::lock_guard lock(devices_[i]->mutex());
    if (cards_[i]->connected()) {
      fds->push_back({cards_[i]->socket_fd(), POLLIN | POLLRDHUP, 0});
    } else {
      switch (cards_[i]->try_reconnect()) {
        case VhostUserBackend::Reconnect::kNotYet: *timeout_ms = 100; break;  // try again shortly
        case VhostUserBackend::Reconnect::kNeedsReset: devices_[i]->set_needs_reset(); break;
        case VhostUserBackend::Reconnect::kReplayed: break;
      }
    }
  }
}

void Vm::service_cards(const std::vector<pollfd>& fds) {
  for (size_t i = 0; i < cards_.size(); ++i) {
    std::lock_guard lock(devices_[i]->mutex());
    if (!cards_[i]->connected()) continue;
    for (const auto& p : fds) {
      if (p.fd != cards_[i]->socket_fd() || p.revents == 0) continue;
      // The poll may have seen a reply meant for a vCPU thread's request. Now that we
      // hold the device lock no request is in flight, so look again: a vhost-user
      // backend never speaks unasked, and readability now means it hung up.
      pollfd again{p.fd, POLLIN | POLLRDHUP, 0};
      if (::poll(&again, 1, 0) == 1 && again.revents != 0) cards_[i]->disconnected();
    }
  }
}

static double seconds(const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; }

void Vm::write_stats() const {
  std::FILE* f = std::fopen(cfg_.stats_path.c_str(), "we");
  if (f == nullptr) {
    LOG_WARN("--stats: cannot write %s: %s", cfg_.stats_path.c_str(), std::strerror(errno));
    return;
  }
  rusage self{}, main_thread{};
  getrusage(RUSAGE_SELF, &self);
  getrusage(RUSAGE_THREAD, &main_thread);
  std::fprintf(f, "{\n  \"exit_status\": %d,\n  \"vcpus\": [", exit_status_.load());
  double vcpu_total = 0;
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    const auto& v = *vcpus_[i];
    vcpu_total += seconds(v.cpu.ru_utime) + seconds(v.cpu.ru_stime);
    std::fprintf(f,
                 "%s\n    {\"id\": %zu, \"user_s\": %.6f, \"sys_s\": %.6f, \"exits\": {\"io\": %" PRIu64
                 ", \"mmio\": %" PRIu64 ", \"other\": %" PRIu64 ", \"interrupted\": %" PRIu64 "}}",
                 i == 0 ? "" : ",", i, seconds(v.cpu.ru_utime), seconds(v.cpu.ru_stime), v.exits.io.load(),
                 v.exits.mmio.load(), v.exits.other.load(), v.exits.interrupted.load());
  }
  const double process = seconds(self.ru_utime) + seconds(self.ru_stime);
  std::fprintf(f,
               "\n  ],\n  \"main_thread\": {\"user_s\": %.6f, \"sys_s\": %.6f},\n"
               "  \"process\": {\"user_s\": %.6f, \"sys_s\": %.6f, \"max_rss_kib\": %ld},\n"
               "  \"non_vcpu_cpu_s\": %.6f\n}\n",
               seconds(main_thread.ru_utime), seconds(main_thread.ru_stime), seconds(self.ru_utime),
               seconds(self.ru_stime), self.ru_maxrss, process - vcpu_total);
  std::fclose(f);
}

Result<void, VmError> Vm::boot_tpm() {
  if (cfg_.tpm_socket.empty() || tpm_) return {};
  auto link = tpm::Link::connect(cfg_.tpm_socket, std::chrono::seconds(10));
  if (!link) return make_error(VmErrc::kDevice, "--tpm: " + link.error().message());
  auto booted = tpm::measure_boot(*link, tpm_events_, std::chrono::seconds(30), &stopping_);
  if (!booted) return make_error(VmErrc::kDevice, "--tpm " + cfg_.tpm_socket + ": measured boot: " + booted.error().message());
  tpm_banks_ = booted->banks;
  tpm_ = std::make_unique<TpmCrb>(std::move(link).value(), std::span(tpm_page_.data(), tpm_page_.size()), &stopping_);
  std::string banks;
  for (uint16_t b : tpm_banks_) banks += std::string(banks.empty() ? "" : ",") + tpm::bank_name(b);
  LOG_INFO("tpm: measured boot into %s (banks %s): PCR 4 kernel, 9 initrd, 12 cmdline; CRB at %#llx", cfg_.tpm_socket.c_str(),
           banks.c_str(), static_cast<unsigned long long>(TpmCrb::kBase));
  return {};
}

bool Vm::start_vcpus() {
  started_ = true;
  for (auto& v : vcpus_) {
    Vcpu* raw = v.get();
    try {
      v->thread = std::thread([this, raw] { vcpu_loop(*raw); });
    } catch (const std::system_error& e) {
      std::fprintf(stderr, "azote-hv: error: cannot start the thread of vCPU %d: %s\n", raw->fd->id(), e.what());
      request_exit(kExitHostSetup);
      return false;
    }
    v->started = true;
  }
  // A kick that raced with thread start would have been lost; repeat it.
  if (stopping_) request_exit(kExitOk);
  return true;
}

const char* Vm::state() const {
  if (stopping_) return "stopping";
  return started_ ? "running" : "created";
}

control::Json Vm::device_json(size_t i) const {
  bool connected = false;
  {
    std::lock_guard lock(devices_[i]->mutex());
    connected = cards_[i]->connected();
  }
  return control::Json{{"kind", cfg_.devices[i].type},
                       {"socket", cfg_.devices[i].socket},
                       {"connected", connected},
                       {"mmio_base", hexs(devices_[i]->base())},
                       {"gsi", devices_[i]->gsi()}};
}

control::Json Vm::describe() const {
  control::Json devices = control::Json::array();
  for (size_t i = 0; i < devices_.size(); ++i) devices.push_back(device_json(i));
  uint64_t io = 0, mmio = 0, other = 0;
  for (const auto& v : vcpus_) {
    io += v->exits.io.load(std::memory_order_relaxed);
    mmio += v->exits.mmio.load(std::memory_order_relaxed);
    other += v->exits.other.load(std::memory_order_relaxed);
  }
  control::Json r = control::ok();
  r["state"] = state();
  r["vcpus"] = cfg_.vcpus;
  r["memory_mib"] = cfg_.memory >> 20;
  r["devices"] = std::move(devices);
  r["pid"] = static_cast<int64_t>(::getpid());
  r["exits"] = control::Json{{"io", io}, {"mmio", mmio}, {"other", other}};
  r["console_dropped_bytes"] = console_->dropped_bytes();
  r["private_memory"] = control::Json{{"backing", mem_->private_is_external() ? "guest_memfd" : "memfd"},
                                      {"why", private_memory_why_}};
  r["measurements"] = measurements_;
  if (!cfg_.tpm_socket.empty()) {
    control::Json banks = control::Json::array(), events = control::Json::array();
    for (uint16_t b : tpm_banks_) banks.push_back(tpm::bank_name(b));
    for (const auto& e : tpm_events_) {
      control::Json ev = {{"pcr", e.pcr}, {"what", e.what}};
      for (const auto& [alg, d] : e.digests) ev[tpm::bank_name(alg)] = to_hex(d);
      events.push_back(std::move(ev));
    }
    r["tpm"] = control::Json{{"socket", cfg_.tpm_socket},
                             {"measured", tpm_ != nullptr},
                             {"banks", std::move(banks)},
                             {"events", std::move(events)},
                             {"commands", tpm_ ? tpm_->commands() : 0},
                             {"failed", tpm_ && tpm_->failed()}};
  }
  return r;
}

control::Json Vm::attach_request(const control::Json& req) {
  if (started_ || stopping_) return control::refuse("devices can only be attached before start");
  const auto kind = req.find("kind");
  if (kind == req.end() || !kind->is_string())
    return control::refuse("attach-device needs \"kind\" as a string (known kinds: " + known_device_kinds() + ")");
  DeviceConfig d;
  d.type = kind->get<std::string>();
  d.from_control = true;
  if (find_device_kind(d.type) == nullptr)
    return control::refuse("unknown device kind \"" + d.type + "\" (known kinds: " + known_device_kinds() + ")");
  const auto sock = req.find("socket");
  if (sock == req.end() || !sock->is_string() || sock->get_ref<const std::string&>().empty())
    return control::refuse("attach-device needs \"socket\": the path of the card's vhost-user socket");
  d.socket = sock->get<std::string>();
  if (d.socket.find('\0') != std::string::npos) return control::refuse("socket path \"" + d.socket + "\" contains a NUL byte");
  if (d.socket.size() >= 108) return control::refuse("socket path \"" + d.socket + "\" is longer than 107 bytes");
  for (const auto& e : cfg_.devices)
    if (same_socket(e.socket, d.socket))
      return control::refuse("cannot attach a \"" + d.type + "\" device on socket " + d.socket +
                             ": a device on that socket is already attached");
  if (devices_.size() >= kMaxDevices)
    return control::refuse("no room for the device on socket " + d.socket + ": all " + std::to_string(kMaxDevices) +
                           " virtio-mmio windows of the layout are taken");
  VmConfig with = cfg_;
  with.devices.push_back(d);
  const size_t len = with.effective_cmdline().size();
  if (len > cmdline_max_)
    return control::refuse("the device on socket " + d.socket + " would make the kernel command line " +
                           std::to_string(len) + " bytes; this kernel accepts at most " + std::to_string(cmdline_max_));
  // A card that is not listening is refused at once (the controller starts cards
  // before attaching them); one that is still starting gets the usual retries.
  struct stat st{};
  if (::stat(d.socket.c_str(), &st) != 0)
    return control::refuse("cannot reach the card at socket " + d.socket + ": " + std::strerror(errno));
  if (!S_ISSOCK(st.st_mode)) return control::refuse("cannot reach the card at socket " + d.socket + ": not a socket");
  if (auto r = attach_device(d); !r.ok()) return control::refuse(r.error().message());
  cfg_.devices.push_back(d);
  LOG_INFO("control: attached %s device %zu on %s", d.type.c_str(), devices_.size() - 1, d.socket.c_str());
  control::Json r = control::ok();
  r["device"] = device_json(devices_.size() - 1);
  return r;
}

control::Json Vm::start_request() {
  if (stopping_) return control::refuse("the VM is stopping");
  if (started_) return control::refuse("the VM is already running (\"start\" was accepted before)");
  // The loader wrote the command line for the --device devices; devices attached since
  // are announced to the guest (virtio_mmio.device=) only now.
  const std::string cmdline = cfg_.effective_cmdline();
  if (cmdline.size() > cmdline_max_)
    return control::refuse("the kernel command line is " + std::to_string(cmdline.size()) +
                           " bytes; this kernel accepts at most " + std::to_string(cmdline_max_));
  std::vector<uint8_t> bytes(cmdline.begin(), cmdline.end());
  bytes.push_back(0);
  if (auto r = mem_->write(GuestAddress(x86::kCmdlineAddr), bytes); !r.ok())
    return control::refuse("cannot write the kernel command line: " + r.error().message());
  if (auto t = boot_tpm(); !t) return control::refuse(t.error().message());
  LOG_INFO("control: start with %zu device(s); command line \"%s\"", devices_.size(), cmdline.c_str());
  if (!start_vcpus()) return control::refuse("the vCPU threads could not be started; the VM is stopping");
  control::Json r = control::ok();
  r["state"] = "running";
  return r;
}

control::Json Vm::control_request(const control::Json& req) {
  const auto op_it = req.find("op");
  if (op_it == req.end() || !op_it->is_string()) return control::refuse("request has no string \"op\"");
  const std::string op = op_it->get<std::string>();
  static const std::vector<std::pair<std::string, std::set<std::string>>> kOps = {
      {"describe", {}}, {"attach-device", {"kind", "socket"}}, {"start", {}}, {"stop", {}}};
  const auto known = std::find_if(kOps.begin(), kOps.end(), [&](const auto& o) { return o.first == op; });
  if (known == kOps.end())
    return control::refuse("unknown op \"" + op + "\" (known: describe, attach-device, start, stop)");
  for (auto it = req.begin(); it != req.end(); ++it) {
    if (it.key() != "op" && known->second.count(it.key()) == 0)
      return control::refuse(op + ": unknown field \"" + it.key() + "\"");
  }
  if (op == "describe") return describe();
  if (op == "attach-device") return attach_request(req);
  if (op == "start") return start_request();
  if (!stopping_) {
    LOG_INFO("stopping the VM on a control request");
    request_exit(kExitSignal);
  }
  return control::ok();
}

int Vm::run() {
  // SIGTERM/SIGINT arrive through a signalfd on this thread; SIGUSR1 only kicks vCPUs
  // out of KVM_RUN (its handler does nothing; immediate_exit closes the race).
  struct sigaction sa{};
  sa.sa_handler = [](int) {};
  sigemptyset(&sa.sa_mask);
  sigaction(kKickSignal, &sa, nullptr);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, kKickSignal);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  sigdelset(&stop, kKickSignal);
  UniqueFd sfd(::signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sfd) {
    std::fprintf(stderr, "azote-hv: error: signalfd: %s\n", std::strerror(errno));
    return kExitHostSetup;
  }

  if (!cfg_.control_path.empty()) {
    auto server = control::Server::listen(cfg_.control_path);
    if (!server.ok()) {
      std::fprintf(stderr, "azote-hv: error: --control: %s\n", server.error().message().c_str());
      return kExitUsage;
    }
    control_ = std::move(server).value();
    LOG_INFO("control: listening on %s; vCPUs parked until a \"start\" request", control_->path().c_str());
  } else {
    if (auto t = boot_tpm(); !t) {
      std::fprintf(stderr, "azote-hv: error: %s\n", t.error().message().c_str());
      return kExitDevice;
    }
    start_vcpus();
  }

  // Everything this thread needed to open is open: from here on it serves the control
  // socket, the console and the cards under its allowlist (and vCPU threads under theirs).
  if (auto s = sandbox::enter_thread("main"); !s) {
    std::fprintf(stderr, "azote-hv: error: %s\n", s.error().message().c_str());
    request_exit(kExitHostSetup);
  }
  const control::Handler handler = [this](const control::Json& req) { return control_request(req); };
  while (!stopping_) {
    std::vector<pollfd> fds{{sfd.get(), POLLIN, 0}, {exit_event_.get(), POLLIN, 0}};
    if (control_) fds.push_back({control_->poll_fd(), POLLIN, 0});
    console_->poll_fds(&fds);
    int timeout_ms = -1;
    watch_cards(&fds, &timeout_ms);
    const int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    if (fds[0].revents != 0) {
      signalfd_siginfo si{};
      if (::read(sfd.get(), &si, sizeof si) == sizeof si) {
        LOG_INFO("stopping the VM on signal %u", si.ssi_signo);
        request_exit(kExitSignal);
      }
    }
    if (fds[1].revents != 0) break;
    if (control_ && fds[2].revents != 0) control_->serve_ready(handler);
    console_->service(fds, [this](std::span<const uint8_t> in) { platform_->console_input(in); });
    service_cards(fds);
  }
  stopping_ = true;
  for (auto& v : vcpus_) v->fd->run()->immediate_exit = 1;
  for (auto& v : vcpus_) {
    if (!v->thread.joinable()) continue;
    pthread_kill(v->thread.native_handle(), kKickSignal);
    v->thread.join();
  }
  control_.reset();  // closes the clients and removes the socket file
  console_->flush();
  if (!cfg_.stats_path.empty()) write_stats();
  const int status = exit_status_.load();
  return status < 0 ? kExitOk : status;
}

}  // namespace azote::hv

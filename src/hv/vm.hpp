// One VM: KVM objects, guest memory, platform devices, one thread per vCPU, and the
// main thread's loop (signals, console, cards, the VM-exit event, the control socket).
// With --control the VM is an "empty shell" after setup: vCPUs created but parked,
// devices attachable over the control socket until a "start" request releases them.
#pragma once

#include <sys/resource.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/error.hpp"
#include "base/mapping.hpp"
#include "base/unique_fd.hpp"
#include "control/control.hpp"
#include "guest_memory/guest_memory.hpp"
#include "hv/config.hpp"
#include "hv/console.hpp"
#include "hv/platform.hpp"
#include "hv/tpm_crb.hpp"
#include "hv/vhost_user_backend.hpp"
#include "hv/virtio_device.hpp"
#include "kvm/kvm.hpp"
#include "tpm/measured_boot.hpp"

namespace azote::hv {

enum class VmErrc { kHost = 1, kImage, kConsole, kDevice };
using VmError = Error<VmErrc>;

class Vm {
 public:
  static Result<std::unique_ptr<Vm>, VmError> create(const VmConfig& cfg);
  ~Vm();

  // Starts the vCPU threads (with --control: serves the control socket and starts
  // them on a "start" request) and runs until the guest, a signal or a "stop" request
  // ends the VM. Returns the process exit status.
  int run();

  // Called from any thread: the first caller's status wins; all vCPUs are kicked.
  void request_exit(int status);

 private:
  // Exits to this process, per vCPU (each counter written only by its vCPU thread).
  struct ExitCounts {
    std::atomic<uint64_t> io{0}, mmio{0}, other{0}, interrupted{0};
  };
  struct Vcpu {
    std::unique_ptr<kvm::VcpuFd> fd;
    std::thread thread;
    std::atomic<bool> started{false};
    ExitCounts exits;
    rusage cpu{};  // this thread's CPU time, taken as it ends
  };
  // Main loop: watch card connections; reconnect the ones that went away.
  void watch_cards(std::vector<pollfd>* fds, int* timeout_ms);
  void service_cards(const std::vector<pollfd>& fds);
  // JSON with per-vCPU exit counts and per-thread CPU time (--stats FILE).
  void write_stats() const;
  // --tpm: connects to the TPM, measures the boot into it (TPM2_Startup, PCR extends)
  // and opens the CRB window. Before the vCPUs run; a failure means they never do.
  Result<void, VmError> boot_tpm();
  // Releases the vCPUs. False (and the VM is stopping) if a thread cannot be created.
  bool start_vcpus();
  // Connects to a card and adds its virtio-mmio window as the next device.
  Result<void, VmError> attach_device(const DeviceConfig& d);
  // Control requests (main thread only): one per line from control::Server.
  control::Json control_request(const control::Json& req);
  control::Json describe() const;
  control::Json device_json(size_t i) const;
  control::Json attach_request(const control::Json& req);
  control::Json start_request();
  const char* state() const;

  explicit Vm(const VmConfig& cfg) : cfg_(cfg) {}
  Result<void, VmError> setup();
  // The kernel's bytes (before memory exists: they decide the I/O window).
  Result<void, VmError> read_kernel();
  Result<void, VmError> read_eif();
  Result<void, VmError> plan_io_window();
  // Private RAM as --private-memory says (a memfd, or a guest_memfd where KVM has one),
  // registered with KVM.
  Result<void, VmError> create_memory();
  Result<void, VmError> load_kernel();
  Result<void, VmError> setup_vcpu(Vcpu& v, bool boot);
  void vcpu_loop(Vcpu& v);
  // Handles one exit; returns false when the vCPU must stop.
  bool handle_exit(Vcpu& v);
  // Reports a fatal guest event: one line on stderr, registers in the log.
  void fatal(Vcpu& v, int status, const std::string& reason);
  std::string instruction_bytes(Vcpu& v, uint64_t rip, const kvm_sregs& s);

  VmConfig cfg_;
  std::optional<kvm::Kvm> kvm_;
  std::unique_ptr<kvm::VmFd> vm_;
  std::optional<GuestMemory> mem_;
  std::string private_memory_why_;  // why private RAM is backed as it is ("describe")
  // What was loaded, measured as it was (docs/design.md "Measurements"): "describe"'s
  // "measurements", from which an instance's attestation PCRs 0-2 come.
  control::Json measurements_;
  // --tpm: what the boot measures into it (computed as the images load), then the
  // device and the banks measured into.
  std::vector<tpm::Event> tpm_events_;
  MappedRegion tpm_page_;  // the CRB command/response buffer (mapped into the guest)
  std::unique_ptr<TpmCrb> tpm_;
  std::vector<uint16_t> tpm_banks_;
  std::optional<Console> console_;
  std::unique_ptr<Platform> platform_;
  std::vector<std::unique_ptr<VirtioMmioDevice>> devices_;
  std::vector<VhostUserBackend*> cards_;  // devices_[i]'s backend, for reconnection
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  kvm::CpuidEntries cpuid_;
  std::vector<kvm::MsrEntry> msrs_;
  std::vector<uint8_t> owned_image_;  // a kernel (or a whole --eif) read from a file
  std::vector<uint8_t> eif_initrd_;   // --eif: its ramdisks, one after the other
  control::Json eif_pcrs_;            // --eif: PCR0/1/2 (and 8 if signed) of the image
  std::span<const uint8_t> image_;    // the kernel (owned_image_ or the built-in guest)
  uint64_t entry_ = 0;
  uint64_t boot_info_ = 0;
  uint64_t cmdline_max_ = 0;  // longest command line this kernel accepts (without the NUL)
  int entry_mode_ = 0;
  UniqueFd exit_event_;
  std::atomic<int> exit_status_{-1};
  std::atomic<bool> stopping_{false};
  bool started_ = false;  // vCPU threads released (main thread only)
  std::unique_ptr<control::Server> control_;
};

}  // namespace azote::hv

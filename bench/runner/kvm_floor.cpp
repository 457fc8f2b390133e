// azote-kvm-floor: what the host kernel charges any VMM for a VM's life, without running a guest.
// Times each KVM step a minimal VMM takes (create VM, TSS/identity pages, irqchip, PIT, memory
// slot, vCPU, destroy) so boot results can be read against the floor of this machine's KVM back
// end. Prints one JSON object: per step, the median over N rounds in microseconds.
//
//   azote-kvm-floor [ROUNDS] [MEM_MIB] [no-pit] [no-irqchip] [slot-first]   (defaults 10, 128)
// no-pit / no-irqchip leave those steps out, to see what each costs at destroy time too;
// slot-first adds the memory slot before the irqchip and PIT instead of after.
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

double now_us() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "azote-kvm-floor: %s: %s\n", what, std::strerror(errno));
  std::exit(71);
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 10;
  const unsigned long mem_mib = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 128;
  bool pit = true;
  bool irqchip = true;
  bool slot_first = false;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "no-pit") {
      pit = false;
    } else if (a == "no-irqchip") {
      irqchip = false;
      pit = false;  // the in-kernel PIT needs the in-kernel irqchip
    } else if (a == "slot-first") {
      slot_first = true;
    } else {
      std::fprintf(stderr, "azote-kvm-floor: unknown option %s\n", argv[i]);
      return 64;
    }
  }
  if (rounds <= 0 || mem_mib == 0 || mem_mib > 65536) {
    std::fprintf(stderr, "usage: azote-kvm-floor [ROUNDS] [MEM_MIB] [no-pit] [no-irqchip]\n");
    return 64;
  }
  const int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm");
  const std::size_t mem_bytes = mem_mib << 20;

  std::vector<std::string> order;
  std::map<std::string, std::vector<double>> t;
  auto step = [&](const char* name, auto&& fn) {
    const double a = now_us();
    fn();
    const double b = now_us();
    if (!t.count(name)) order.emplace_back(name);
    t[name].push_back(b - a);
  };

  for (int i = 0; i < rounds; ++i) {
    int vm = -1;
    int vcpu = -1;
    int memfd = -1;
    void* mem = nullptr;
    const double start = now_us();
    step("create_vm", [&] {
      vm = ioctl(kvm, KVM_CREATE_VM, 0);
      if (vm < 0) die("KVM_CREATE_VM");
    });
    step("set_tss_addr", [&] {
      if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfeffd000UL) < 0) die("KVM_SET_TSS_ADDR");
    });
    auto add_slot = [&] {
      step("memfd_mmap", [&] {
        memfd = memfd_create("kvm-floor", MFD_CLOEXEC);
        if (memfd < 0 || ftruncate(memfd, static_cast<off_t>(mem_bytes)) != 0) die("memfd");
        mem = mmap(nullptr, mem_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, memfd, 0);
        if (mem == MAP_FAILED) die("mmap");
      });
      step("set_user_memory_region", [&] {
        kvm_userspace_memory_region r{};
        r.slot = 0;
        r.guest_phys_addr = 0;
        r.memory_size = mem_bytes;
        r.userspace_addr = reinterpret_cast<std::uintptr_t>(mem);
        if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) die("KVM_SET_USER_MEMORY_REGION");
      });
    };
    auto add_chips = [&] {
      if (irqchip) {
        step("create_irqchip", [&] {
          if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
        });
      }
      if (pit) {
        step("create_pit2", [&] {
          kvm_pit_config cfg{};
          cfg.flags = KVM_PIT_SPEAKER_DUMMY;
          if (ioctl(vm, KVM_CREATE_PIT2, &cfg) < 0) die("KVM_CREATE_PIT2");
        });
      }
    };
    if (slot_first) {
      add_slot();
      add_chips();
    } else {
      add_chips();
      add_slot();
    }
    step("create_vcpu", [&] {
      vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
      if (vcpu < 0) die("KVM_CREATE_VCPU");
    });
    step("close_vcpu", [&] { close(vcpu); });
    step("close_vm", [&] { close(vm); });
    step("unmap_close_memfd", [&] {
      munmap(mem, mem_bytes);
      close(memfd);
    });
    t["total"].push_back(now_us() - start);
  }
  order.emplace_back("total");

  std::printf("{\"rounds\": %d, \"mem_mib\": %lu, \"irqchip\": %s, \"pit\": %s, \"slot_first\": %s, "
              "\"median_us\": {",
              rounds, mem_mib, irqchip ? "true" : "false", pit ? "true" : "false",
              slot_first ? "true" : "false");
  for (std::size_t i = 0; i < order.size(); ++i) {
    auto v = t[order[i]];
    std::sort(v.begin(), v.end());
    const double med = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    std::printf("%s\"%s\": %.1f", i ? ", " : "", order[i].c_str(), med);
  }
  std::printf("}}\n");
  return 0;
}

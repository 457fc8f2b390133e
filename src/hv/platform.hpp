// The only device models inside azote-hv: COM1 (16550), the debug-exit port and the
// i8042 reset line. Everything else a guest touches is either in KVM (LAPIC, IOAPIC,
// PIC, PIT) or, later, in a card process.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>

#include "uart/uart16550.hpp"

namespace azote::hv {

inline constexpr uint16_t kCom1Base = 0x3f8;
inline constexpr uint16_t kCom1Irq = 4;
inline constexpr uint16_t kDebugExitPort = 0xf4;
inline constexpr uint16_t kI8042Data = 0x60;
inline constexpr uint16_t kI8042Command = 0x64;

// What a port access asked the VM to do.
// kAbsent: a probe of legacy hardware this platform does not have (floating bus:
// reads all-ones, writes ignored). kUnhandled: a port nothing explains - fatal.
enum class PortAction { kNone, kExit, kAbsent, kUnhandled };

bool absent_legacy_port(uint16_t port);

struct PortResult {
  PortAction action = PortAction::kNone;
  int exit_status = 0;
};

class Platform {
 public:
  using TxSink = std::function<void(uint8_t)>;
  using IrqLine = std::function<void(uint32_t irq, bool level)>;
  Platform(TxSink tx, IrqLine irq);

  // One port access of `data.size()` bytes (1, 2 or 4). Reads fill `data`.
  PortResult io(uint16_t port, bool is_write, std::span<uint8_t> data);
  void console_input(std::span<const uint8_t> bytes);
  uint64_t absent_accesses() const { return absent_accesses_; }

 private:
  std::mutex mu_;
  uart::Uart16550 com1_;
  std::atomic<uint64_t> absent_accesses_{0};
};

}  // namespace azote::hv

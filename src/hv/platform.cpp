#include "hv/platform.hpp"

#include <algorithm>

namespace azote::hv {

Platform::Platform(TxSink tx, IrqLine irq)
    : com1_(std::move(tx), [irq](bool level) { irq(kCom1Irq, level); }) {}

PortResult Platform::io(uint16_t port, bool is_write, std::span<uint8_t> data) {
  if (port >= kCom1Base && port < kCom1Base + 8) {
    std::lock_guard lock(mu_);
    const auto off = static_cast<uint8_t>(port - kCom1Base);
    if (is_write) com1_.write(off, data[0]);
    else data[0] = com1_.read(off);
    // Wider accesses touch only the first register, as on the ISA bus.
    if (!is_write) std::fill(data.begin() + 1, data.end(), 0);
    return {};
  }
  if (port == kDebugExitPort) {
    if (is_write) return {PortAction::kExit, data[0]};
    std::fill(data.begin(), data.end(), 0xff);
    return {};
  }
  if (port == kI8042Data || port == kI8042Command) {
    // Just enough i8042 for the reset line: command 0xfe pulses CPU reset. Reads say
    // "no data, input buffer empty" so drivers give up probing quietly.
    if (is_write) {
      if (port == kI8042Command && data[0] == 0xfe) return {PortAction::kExit, 0};
    } else {
      std::fill(data.begin(), data.end(), 0);
    }
    return {};
  }
  return {PortAction::kUnhandled, 0};
}

void Platform::console_input(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mu_);
  com1_.receive(bytes);
}

}  // namespace azote::hv

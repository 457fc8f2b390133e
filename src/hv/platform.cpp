#include "hv/platform.hpp"

#include <algorithm>

namespace azote::hv {

bool absent_legacy_port(uint16_t port) {
  // Ports where PC software expects legacy hardware that azote-hv deliberately does
  // not have. Stock kernels probe them and treat all-ones as "absent".
  struct Range {
    uint16_t first, last;
  };
  static constexpr Range kAbsent[] = {
      {0x0000, 0x001f},  // DMA controller 1
      {0x0022, 0x0023},  // IMCR
      {0x0070, 0x0071},  // CMOS / RTC
      {0x0080, 0x009f},  // POST code, DMA page registers
      {0x00c0, 0x00df},  // DMA controller 2
      {0x00ed, 0x00ed},  // alternative I/O delay port
      {0x0092, 0x0092},  // system control port A
      {0x0170, 0x0177}, {0x01f0, 0x01f7}, {0x0376, 0x0376},  // IDE
      {0x0201, 0x0201},  // game port
      {0x0278, 0x027a}, {0x0378, 0x037a}, {0x03bc, 0x03be},  // parallel ports
      {0x02e8, 0x02ef}, {0x02f8, 0x02ff}, {0x03e8, 0x03ef},  // COM2-COM4
      {0x03b0, 0x03df},  // VGA
      {0x03f0, 0x03f7},  // floppy
      {0x0cf8, 0x0cff},  // PCI configuration mechanism #1 (no PCI bus yet)
  };
  for (const auto& r : kAbsent)
    if (port >= r.first && port <= r.last) return true;
  return false;
}

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
  if (absent_legacy_port(port)) {
    if (!is_write) std::fill(data.begin(), data.end(), 0xff);
    ++absent_accesses_;
    return {PortAction::kAbsent, 0};
  }
  return {PortAction::kUnhandled, 0};
}

void Platform::console_input(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mu_);
  com1_.receive(bytes);
}

}  // namespace azote::hv

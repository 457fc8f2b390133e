// A 16550A UART register model (COM1 in azote-hv). No I/O of its own: transmitted
// bytes go to a sink callback and the interrupt line to an irq callback, so the model
// is unit-testable. Not thread-safe: the owner serialises access.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <span>

namespace azote::uart {

class Uart16550 {
 public:
  using TxSink = std::function<void(uint8_t)>;
  using IrqLine = std::function<void(bool level)>;

  Uart16550(TxSink tx, IrqLine irq) : tx_(std::move(tx)), irq_(std::move(irq)) {}

  // offset 0..7 from the base port.
  uint8_t read(uint8_t offset);
  void write(uint8_t offset, uint8_t value);
  // Bytes typed at the console; dropped (and counted) beyond the FIFO size.
  void receive(std::span<const uint8_t> bytes);
  uint64_t rx_dropped() const { return rx_dropped_; }

  static constexpr size_t kFifoSize = 64;

 private:
  void update_irq();
  bool dlab() const { return (lcr_ & 0x80) != 0; }
  bool loopback() const { return (mcr_ & 0x10) != 0; }

  TxSink tx_;
  IrqLine irq_;
  std::deque<uint8_t> rx_;
  uint8_t ier_ = 0, lcr_ = 0x03, mcr_ = 0x08, scr_ = 0, fcr_ = 0;
  uint8_t dll_ = 0x0c, dlm_ = 0;  // 9600 baud
  bool thr_irq_pending_ = false;
  bool irq_level_ = false;
  uint64_t rx_dropped_ = 0;
};

}  // namespace azote::uart

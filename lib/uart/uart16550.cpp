#include "uart/uart16550.hpp"

namespace azote::uart {
namespace {
constexpr uint8_t kIerRx = 0x01, kIerThre = 0x02;
constexpr uint8_t kLsrDr = 0x01, kLsrThre = 0x20, kLsrTemt = 0x40;
constexpr uint8_t kIirNone = 0x01, kIirThre = 0x02, kIirRx = 0x04;
}  // namespace

uint8_t Uart16550::read(uint8_t offset) {
  switch (offset & 7) {
    case 0: {
      if (dlab()) return dll_;
      if (rx_.empty()) return 0;
      const uint8_t b = rx_.front();
      rx_.pop_front();
      update_irq();
      return b;
    }
    case 1: return dlab() ? dlm_ : ier_;
    case 2: {
      uint8_t iir = kIirNone;
      if ((ier_ & kIerRx) != 0 && !rx_.empty()) {
        iir = kIirRx;
      } else if ((ier_ & kIerThre) != 0 && thr_irq_pending_) {
        iir = kIirThre;
        thr_irq_pending_ = false;  // reading IIR acknowledges THRE
        update_irq();
      }
      return static_cast<uint8_t>(iir | ((fcr_ & 1) != 0 ? 0xc0 : 0));
    }
    case 3: return lcr_;
    case 4: return mcr_;
    case 5: return static_cast<uint8_t>((rx_.empty() ? 0 : kLsrDr) | kLsrThre | kLsrTemt);
    case 6:
      if (loopback()) {  // DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD
        return static_cast<uint8_t>(((mcr_ & 1) << 5) | ((mcr_ & 2) << 3) | ((mcr_ & 4) << 4) | ((mcr_ & 8) << 4));
      }
      return 0xb0;  // DCD, DSR, CTS
    default: return scr_;
  }
}

void Uart16550::write(uint8_t offset, uint8_t value) {
  switch (offset & 7) {
    case 0:
      if (dlab()) {
        dll_ = value;
        return;
      }
      if (loopback()) {
        receive(std::span(&value, 1));
      } else {
        tx_(value);
      }
      thr_irq_pending_ = true;  // the transmitter is instantly empty again
      update_irq();
      return;
    case 1:
      if (dlab()) {
        dlm_ = value;
        return;
      }
      // Enabling THRE interrupts while the transmitter is empty raises one at once.
      if ((value & kIerThre) != 0 && (ier_ & kIerThre) == 0) thr_irq_pending_ = true;
      ier_ = value & 0x0f;
      update_irq();
      return;
    case 2:
      fcr_ = value;
      if ((value & 0x02) != 0) {
        rx_.clear();
        update_irq();
      }
      return;
    case 3: lcr_ = value; return;
    case 4: mcr_ = value & 0x1f; update_irq(); return;
    case 7: scr_ = value; return;
    default: return;  // LSR/MSR are read-only
  }
}

void Uart16550::receive(std::span<const uint8_t> bytes) {
  for (uint8_t b : bytes) {
    if (rx_.size() >= kFifoSize) {
      ++rx_dropped_;
      continue;
    }
    rx_.push_back(b);
  }
  update_irq();
}

void Uart16550::update_irq() {
  // OUT2 gates the interrupt line on PC-compatible boards.
  const bool pending = ((ier_ & kIerRx) != 0 && !rx_.empty()) || ((ier_ & kIerThre) != 0 && thr_irq_pending_);
  const bool level = pending && (mcr_ & 0x08) != 0;
  if (level != irq_level_) {
    irq_level_ = level;
    irq_(level);
  }
}

}  // namespace azote::uart

// The TCG PC Client Platform TPM Profile's CRB interface (Command Response Buffer),
// locality 0, at 0xfed40000: a 4 KiB register window trapped as MMIO, the command and
// response buffer inside it at 0x80 (as QEMU's tpm-crb lays it out). Writing 1 to
// CTRL_START sends the buffer's command to the TPM card over its socket and puts the
// card's response in the buffer; that is all azote-hv does for a TPM. The window is
// this process's memory, never guest RAM: the command is copied out of it once, its
// size checked against the buffer, before anything is sent.
//
// The command runs on the vCPU thread that wrote CTRL_START (the guest polls CTRL_START
// anyway); another vCPU touching the window meanwhile waits for it. A stopping VM
// cancels a command in flight.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>

#include "tpm/link.hpp"

namespace azote::hv {

class TpmCrb {
 public:
  static constexpr uint64_t kBase = 0xfed40000;
  static constexpr uint64_t kSize = 0x1000;
  static constexpr uint32_t kBuffer = 0x80;  // offset of the command/response buffer
  static constexpr uint32_t kBufferSize = kSize - kBuffer;
  static constexpr uint64_t kControlArea = kBase + 0x40;  // what the ACPI TPM2 table names

  TpmCrb(tpm::Link link, const std::atomic<bool>* cancel);

  bool contains(uint64_t addr, uint64_t len) const { return addr >= kBase && len <= kSize && addr - kBase <= kSize - len; }
  void access(uint64_t addr, bool is_write, std::span<uint8_t> data);

  uint64_t commands() const { return commands_.load(std::memory_order_relaxed); }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }

 private:
  void write_register(uint32_t reg, uint32_t value);  // mu_ held
  void run_command();                                 // mu_ held
  void respond_error(uint32_t rc);                    // mu_ held
  uint32_t reg(uint32_t off) const;
  void set_reg(uint32_t off, uint32_t v);

  std::mutex mu_;
  tpm::Link link_;
  const std::atomic<bool>* cancel_;
  std::array<uint8_t, kSize> window_{};  // registers and buffer, little-endian
  bool assigned_ = false;                 // locality 0 granted
  std::atomic<uint64_t> commands_{0};
  std::atomic<bool> failed_{false};       // the card went away: every command now fails
};

}  // namespace azote::hv

// The TCG PC Client Platform TPM Profile's CRB interface (Command Response Buffer),
// locality 0, at 0xfed40000: a 4 KiB register window trapped as MMIO. The command and
// response buffer is the page after it (0xfed41000, named by CTRL_CMD_LADDR and
// CTRL_RSP_ADDR as the interface allows): a memory page of azote-hv's own that KVM maps
// into the guest, so that writing a command and reading a response do not trap (~90
// exits a command when the buffer sat in the window, as in QEMU's tpm-crb; docs/
// benchmarks.md "TPM"). It is never guest RAM. Writing 1 to CTRL_START copies the whole
// page once, checks the command's size in the copy, sends it to the TPM card over its
// socket and puts the card's response in the page; that is all azote-hv does for a TPM.
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
  static constexpr uint64_t kBufferAddr = kBase + kSize;  // the command/response buffer's page
  static constexpr uint32_t kBufferSize = 0x1000;
  static constexpr uint64_t kControlArea = kBase + 0x40;  // what the ACPI TPM2 table names

  // `buffer`: the kBufferSize bytes KVM maps at kBufferAddr (they outlive this object).
  TpmCrb(tpm::Link link, std::span<uint8_t> buffer, const std::atomic<bool>* cancel);

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
  std::span<uint8_t> buffer_;             // shared with the guest: copied once per command
  std::array<uint8_t, 0x80> window_{};    // the registers, little-endian (the rest of the page reads 0)
  bool assigned_ = false;                 // locality 0 granted
  std::atomic<uint64_t> commands_{0};
  std::atomic<bool> failed_{false};       // the card went away: every command now fails
};

}  // namespace azote::hv

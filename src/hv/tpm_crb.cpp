#include "hv/tpm_crb.hpp"

#include <cstring>
#include <algorithm>

#include "base/log.hpp"

namespace azote::hv {

namespace {

// Register offsets (TCG PC Client PTP, CRB interface, locality 0).
constexpr uint32_t kLocState = 0x00, kLocCtrl = 0x08, kLocSts = 0x0c, kIntfId = 0x30, kIntfIdHigh = 0x34;
constexpr uint32_t kCtrlReq = 0x40, kCtrlSts = 0x44, kCtrlCancel = 0x48, kCtrlStart = 0x4c, kIntEnable = 0x50,
                   kIntSts = 0x54, kCmdSize = 0x58, kCmdLaddr = 0x5c, kCmdHaddr = 0x60, kRspSize = 0x64,
                   kRspAddr = 0x68, kRspAddrHigh = 0x6c;
constexpr uint32_t kLocStateValid = 1u << 7, kLocStateAssigned = 1u << 1, kLocStateEstablished = 1u << 0;
constexpr uint32_t kCtrlStsFatal = 1u << 0, kCtrlStsIdle = 1u << 1;
// InterfaceType CRB, version 1, CapDataXferSizeSupport 8 bytes, CapCRB, InterfaceSelector CRB.
constexpr uint32_t kIntfIdValue = 0x1u | (0x1u << 4) | (0x1u << 11) | (1u << 14) | (0x1u << 17);

constexpr uint32_t kRcFailure = 0x101, kRcCommandSize = 0x142;
constexpr auto kCommandTimeout = std::chrono::seconds(60);

}  // namespace

TpmCrb::TpmCrb(tpm::Link link, std::span<uint8_t> buffer, const std::atomic<bool>* cancel)
    : link_(std::move(link)), cancel_(cancel), buffer_(buffer) {
  set_reg(kLocState, kLocStateValid | kLocStateEstablished);
  set_reg(kIntfId, kIntfIdValue);
  set_reg(kCtrlSts, kCtrlStsIdle);
  set_reg(kCmdSize, kBufferSize);
  set_reg(kCmdLaddr, static_cast<uint32_t>(kBufferAddr));
  set_reg(kCmdHaddr, 0);
  set_reg(kRspSize, kBufferSize);
  set_reg(kRspAddr, static_cast<uint32_t>(kBufferAddr));
  set_reg(kRspAddrHigh, 0);
}

uint32_t TpmCrb::reg(uint32_t off) const {
  uint32_t v = 0;
  std::memcpy(&v, &window_[off], 4);
  return v;
}
void TpmCrb::set_reg(uint32_t off, uint32_t v) { std::memcpy(&window_[off], &v, 4); }

void TpmCrb::access(uint64_t addr, bool is_write, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  const auto off = static_cast<uint32_t>(addr - kBase);
  if (off + data.size() > window_.size()) {  // past the registers: reads 0, writes dropped
    if (!is_write) std::fill(data.begin(), data.end(), 0);
    return;
  }
  if (!is_write) {
    std::memcpy(data.data(), &window_[off], data.size());
    return;
  }
  // Registers: each 32-bit register the write touches, with the bytes it writes merged
  // into the register's current value (1-, 2-, 4- and 8-byte accesses alike).
  for (uint32_t r = off & ~3u; r < off + data.size(); r += 4) {
    uint8_t bytes[4];
    std::memcpy(bytes, &window_[r], 4);
    for (uint32_t i = 0; i < 4; ++i)
      if (r + i >= off && r + i < off + data.size()) bytes[i] = data[r + i - off];
    uint32_t v = 0;
    std::memcpy(&v, bytes, 4);
    write_register(r, v);
  }
}

void TpmCrb::write_register(uint32_t r, uint32_t v) {
  switch (r) {
    case kLocCtrl:
      if (v & 1u) assigned_ = true;        // requestAccess
      if (v & 2u) assigned_ = false;       // relinquish
      set_reg(kLocState, kLocStateValid | kLocStateEstablished | (assigned_ ? kLocStateAssigned : 0));
      set_reg(kLocSts, assigned_ ? 1u : 0u);  // Granted
      break;
    case kCtrlReq:  // cmdReady / goIdle take effect at once; the register reads 0
      if (v & 1u) set_reg(kCtrlSts, reg(kCtrlSts) & ~kCtrlStsIdle);
      if (v & 2u) set_reg(kCtrlSts, reg(kCtrlSts) | kCtrlStsIdle);
      break;
    case kCtrlCancel:
    case kIntEnable:
      set_reg(r, v & 1u);
      break;
    case kIntSts:  // write 1 to clear; no interrupt is ever raised, so it stays 0
      set_reg(r, 0);
      break;
    case kCtrlStart:
      if ((v & 1u) && assigned_) {
        set_reg(kCtrlStart, 1);
        run_command();
        set_reg(kCtrlStart, 0);
      }
      break;
    default:
      break;  // read-only (identity, buffer addresses and sizes) or reserved
  }
}

void TpmCrb::respond_error(uint32_t rc) {
  const uint8_t rsp[10] = {0x80, 0x01, 0, 0, 0, 10, static_cast<uint8_t>(rc >> 24), static_cast<uint8_t>(rc >> 16),
                           static_cast<uint8_t>(rc >> 8), static_cast<uint8_t>(rc)};
  std::memcpy(buffer_.data(), rsp, sizeof rsp);
}

void TpmCrb::run_command() {
  // The guest may change the page at any time (another vCPU): the whole page is copied
  // once, and only the copy is looked at.
  std::array<uint8_t, kBufferSize> command;
  std::memcpy(command.data(), buffer_.data(), kBufferSize);
  const uint32_t size = tpm::header_size(command);
  if (size < tpm::kHeaderBytes || size > tpm::kMaxMessageBytes) {
    respond_error(kRcCommandSize);
    return;
  }
  if (failed_) {
    respond_error(kRcFailure);
    return;
  }
  std::array<uint8_t, kBufferSize> response{};
  auto r = link_.transact(std::span(command).first(size), response, kCommandTimeout, cancel_);
  commands_.fetch_add(1, std::memory_order_relaxed);
  if (!r) {
    // A TPM that stopped answering mid-boot cannot be trusted with the PCRs' story:
    // the device reports a fatal error from now on (CTRL_STS.tpmSts).
    if (!(cancel_ && cancel_->load())) LOG_ERROR("tpm: %s; the guest's TPM is failed from now on", r.error().message().c_str());
    failed_ = true;
    set_reg(kCtrlSts, reg(kCtrlSts) | kCtrlStsFatal);
    respond_error(kRcFailure);
    return;
  }
  std::memcpy(buffer_.data(), response.data(), *r);
}

}  // namespace azote::hv

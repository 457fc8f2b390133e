// libtpms behind one object: a TPM 2.0 whose permanent state comes from the caller (the
// decrypted state file, or nothing: then libtpms manufactures a new TPM) and goes back
// through `persist` whenever libtpms commits it ("permall", after every command that
// changed NV). Nothing else is persisted: the volatile state ("volatilestate",
// "savestate") lives in memory only, so a new card process is a power cycle; the
// hypervisor, acting as firmware, sends TPM2_Startup(CLEAR) and the measured-boot
// extends itself. This object never sends a command of its own.
//
// libtpms is one global TPM per process and its callbacks are plain C functions with no
// user pointer, so the engine registers itself in one file-static pointer (engine.cpp):
// at most one TpmEngine exists at a time (start() refuses a second). libtpms is not
// thread-safe: start(), process() and the destructor must not run concurrently (the
// card runs start() on its control thread, then process() only on its TPM thread, and
// joins that thread before the destructor).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "cards/tpm/error.hpp"
#include "cards/tpm/secret.hpp"

namespace azote::card_tpm {

inline constexpr uint32_t kTpmHeaderBytes = 10;  // tag u16, size u32, code u32 (big-endian)
inline constexpr uint32_t kTpmRcFailure = 0x101;  // TPM_RC_FAILURE

class TpmEngine {
 public:
  // Called with libtpms's permanent state to keep; false: it was not kept (libtpms then
  // reports the NV write as failed).
  using Persist = std::function<bool(std::span<const uint8_t> permall)>;

  // `permall`: the permanent state to load (wiped here once libtpms has it), or empty for a
  // new TPM. A state libtpms cannot load is an error, never a new TPM.
  static TpmResult<std::unique_ptr<TpmEngine>> start(SecretBytes permall, Persist persist);
  ~TpmEngine();  // TPMLIB_Terminate; wipes the response buffer
  TpmEngine(const TpmEngine&) = delete;
  TpmEngine& operator=(const TpmEngine&) = delete;

  // Runs one whole command (its header's size equals command.size(), checked by the
  // caller) and returns the response, valid until the next call. Never fails: if libtpms
  // does, the response is a bare TPM_RC_FAILURE.
  std::span<const uint8_t> process(std::span<uint8_t> command);

  bool manufactured() const { return manufactured_; }
  uint64_t stores() const { return stores_; }  // permanent states kept through `persist`  // there was no state: a new TPM
  uint32_t max_command_bytes() const { return buffer_bytes_; }  // TPMLIB_SetBufferSize's size
  uint64_t state_bytes() const { return state_bytes_; }  // size of the last permanent state loaded or kept

  // The response code of a response (bytes 6..9), or kTpmRcFailure if it is too short.
  static uint32_t response_code(std::span<const uint8_t> response);

  // libtpms's callbacks (engine.cpp) reach the live engine through these.
  uint32_t load(unsigned char** data, uint32_t* length, const char* name);
  uint32_t store(const unsigned char* data, uint32_t length, const char* name);
  uint32_t remove(const char* name);

 private:
  TpmEngine() = default;
  TpmResult<void> persist_current();  // TPMLIB_GetState(PERMANENT) through persist_
  SecretBytes initial_;  // while TPMLIB_MainInit runs: the state given, then the last one kept
  bool initialising_ = false;
  bool manufactured_ = false;
  Persist persist_;
  std::map<std::string, SecretBytes> volatile_blobs_;  // anything but "permall"
  uint32_t buffer_bytes_ = 0;
  uint64_t state_bytes_ = 0;
  uint64_t stores_ = 0;  // permanent states kept
  unsigned char* response_ = nullptr;  // libtpms (re)allocates it
  uint32_t response_capacity_ = 0;
  unsigned char failure_[kTpmHeaderBytes] = {};
};

}  // namespace azote::card_tpm

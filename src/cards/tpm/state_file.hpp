// The TPM's state at rest: libtpms's permanent state ("permall": seeds, hierarchies,
// NV indices, persistent objects) encrypted with AES-256-GCM under the instance's state
// key (lib/pki keywrap: random nonce, the context as AAD), in ONE file given as a
// descriptor, made crash-safe with two slots:
//
//   offset 0:           slot 0
//   offset kSlotBytes:  slot 1
//   slot = magic "AZTPMST1" (8) | generation (u64 LE) | length (u32 LE) | wrapped (length)
//   wrapped = pki::wrap_key(key, permall, "azote-tpm-state:<instance>:<generation>")
//
// A store writes generation + 1 into the slot that does NOT hold the current generation,
// then fdatasync: a crash during the write leaves the current slot whole. A load reads
// both slots and takes the highest generation that authenticates; a slot that does not
// authenticate while the other does is a torn write (ignored, logged). If a slot carries
// the magic and none authenticates, the load is refused: a wrong key, another instance's
// state or tampering, and a new TPM is never made over a state that exists. Plaintext
// state is never written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/unique_fd.hpp"
#include "cards/tpm/error.hpp"
#include "cards/tpm/secret.hpp"
#include "pki/keywrap.hpp"

namespace azote::card_tpm {

inline constexpr char kSlotMagic[8] = {'A', 'Z', 'T', 'P', 'M', 'S', 'T', '1'};
// The magic of the very first write until it is on disk (see store()).
inline constexpr char kPendingMagic[8] = {'A', 'Z', 'T', 'P', 'M', 'S', 'T', '0'};
inline constexpr size_t kSlotHeaderBytes = 8 + 8 + 4;
// libtpms (0.9) keeps at most NV_MEMORY_SIZE = 128 KiB + 65 * 704 bytes of NV memory;
// its permall adds a few KiB of persistent data around it (TPMLIB_GetTPMProperty has no
// TPMPROP_TPM_MAX_NV_SPACE for TPM 2). 256 KiB holds the fullest state with room left.
inline constexpr uint64_t kSlotBytes = 256 * 1024;
inline constexpr size_t kMaxWrappedBytes = kSlotBytes - kSlotHeaderBytes;
inline constexpr size_t kMaxStateBytes = kMaxWrappedBytes - pki::kWrapOverhead;

// The AAD of generation `generation` of `instance`'s state.
std::string state_context(std::string_view instance, uint64_t generation);

struct LoadedState {
  bool empty = true;    // no state yet (an empty or all-zero file): libtpms makes a new TPM
  SecretBytes state;    // the permanent state, plaintext (wiped when released)
  uint64_t generation = 0;
  int slot = -1;
  int ignored_slot = -1;  // a slot that did not authenticate while the other did (a torn write)
};

class StateFile {
 public:
  // Takes `fd`: a regular file open for reading and writing, locked (flock) so that no
  // other card serves the same state. `name` names it in messages ("state fd:5").
  static TpmResult<std::unique_ptr<StateFile>> adopt(UniqueFd fd, std::string name, std::string instance);

  // Reads both slots (see above). Must come before store().
  TpmResult<LoadedState> load(const StateKey& key);
  // Encrypts `state` as generation() + 1 into the other slot, then fdatasync. A state
  // larger than kMaxStateBytes is refused (nothing written).
  TpmResult<void> store(const StateKey& key, std::span<const uint8_t> state);

  uint64_t generation() const { return generation_; }  // 0: nothing stored yet
  int slot() const { return slot_; }                   // -1: nothing stored yet
  const std::string& name() const { return name_; }

 private:
  StateFile() = default;
  UniqueFd fd_;
  std::string name_, instance_;
  uint64_t generation_ = 0;
  int slot_ = -1;
  bool loaded_ = false;
};

}  // namespace azote::card_tpm

#include "cards/tpm/state_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "base/log.hpp"

namespace azote::card_tpm {
namespace {

enum class SlotKind { kNoMagic, kBad, kGood };

struct Slot {
  SlotKind kind = SlotKind::kNoMagic;
  bool all_zero = true;  // kNoMagic: every byte read is zero (or none was read)
  bool pending = false;  // kNoMagic: the pending magic of a first write not yet complete
  uint64_t generation = 0;
  std::string why;       // kBad: why it does not authenticate
  SecretBytes state;     // kGood
};

uint64_t get_le(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

void put_le(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

off_t slot_offset(int slot) { return static_cast<off_t>(static_cast<uint64_t>(slot) * kSlotBytes); }

// Up to kSlotBytes of slot `slot` (fewer at the end of the file).
TpmResult<std::vector<uint8_t>> read_slot(int fd, int slot, const std::string& name) {
  std::vector<uint8_t> buf(kSlotBytes);
  size_t got = 0;
  while (got < buf.size()) {
    const ssize_t n = ::pread(fd, buf.data() + got, buf.size() - got, slot_offset(slot) + static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(TpmErrc::kState, name + ": read slot " + std::to_string(slot));
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  buf.resize(got);
  return buf;
}

TpmResult<void> write_all(int fd, std::span<const uint8_t> bytes, off_t at, const std::string& what) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done, at + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(TpmErrc::kState, what);
    done += static_cast<size_t>(n);
  }
  return {};
}

Slot parse_slot(std::span<const uint8_t> raw, const StateKey& key, std::string_view instance) {
  Slot s;
  if (raw.size() < sizeof kSlotMagic || std::memcmp(raw.data(), kSlotMagic, sizeof kSlotMagic) != 0) {
    s.all_zero = std::all_of(raw.begin(), raw.end(), [](uint8_t b) { return b == 0; });
    s.pending = raw.size() >= sizeof kPendingMagic && std::memcmp(raw.data(), kPendingMagic, sizeof kPendingMagic) == 0;
    return s;
  }
  s.kind = SlotKind::kBad;
  if (raw.size() < kSlotHeaderBytes) {
    s.why = "is cut short in its header";
    return s;
  }
  s.generation = get_le(raw.data() + 8, 8);
  const uint64_t length = get_le(raw.data() + 16, 4);
  if (length > kMaxWrappedBytes || length > raw.size() - kSlotHeaderBytes) {
    s.why = "claims " + std::to_string(length) + " bytes, past the slot or the end of the file";
    return s;
  }
  auto plain = pki::unwrap_key(key.bytes(), raw.subspan(kSlotHeaderBytes, length), state_context(instance, s.generation));
  if (!plain) {
    s.why = "does not authenticate";  // AES-GCM: wrong key, wrong instance or generation, or changed bytes
    return s;
  }
  s.kind = SlotKind::kGood;
  s.state = SecretBytes(std::move(plain).value());
  return s;
}

std::string describe_bad(const Slot& s, int i) {
  return "slot " + std::to_string(i) + " (generation " + std::to_string(s.generation) + ") " + s.why;
}

}  // namespace

std::string state_context(std::string_view instance, uint64_t generation) {
  return "azote-tpm-state:" + std::string(instance) + ":" + std::to_string(generation);
}

TpmResult<std::unique_ptr<StateFile>> StateFile::adopt(UniqueFd fd, std::string name, std::string instance) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error(TpmErrc::kState, name);
  if (!S_ISREG(st.st_mode)) return make_error(TpmErrc::kState, name + " is not a regular file");
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0) return errno_error(TpmErrc::kState, name);
  if ((flags & O_ACCMODE) != O_RDWR) return make_error(TpmErrc::kState, name + " is not open for reading and writing");
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return make_error(TpmErrc::kState, name + " is in use by another TPM card (flock)");
    return errno_error(TpmErrc::kState, name + ": flock");
  }
  std::unique_ptr<StateFile> f(new StateFile());
  f->fd_ = std::move(fd);
  f->name_ = std::move(name);
  f->instance_ = std::move(instance);
  return f;
}

TpmResult<LoadedState> StateFile::load(const StateKey& key) {
  Slot slots[2];
  for (int i = 0; i < 2; ++i) {
    AZOTE_TRY(raw, read_slot(fd_.get(), i, name_));
    slots[i] = parse_slot(raw, key, instance_);
  }
  int best = -1;
  for (int i = 0; i < 2; ++i) {
    if (slots[i].kind == SlotKind::kGood && (best < 0 || slots[i].generation > slots[best].generation)) best = i;
  }
  LoadedState out;
  if (best < 0) {
    // The very first write cut short (a crash before it was on disk, ENOSPC): its slot
    // still carries the pending magic and the other was never written. No TPM was ever
    // served from it (open answers only once generation 1 is on disk): a new TPM, not a
    // refusal that would keep the instance from ever starting again.
    for (int i = 0; i < 2; ++i)
      if (slots[i].pending && slots[1 - i].kind == SlotKind::kNoMagic && slots[1 - i].all_zero && !slots[1 - i].pending) {
        LOG_WARN("%s: slot %d holds a first write that never completed; a new TPM", name_.c_str(), i);
        loaded_ = true;
        return out;
      }
    const bool magic = slots[0].kind != SlotKind::kNoMagic || slots[1].kind != SlotKind::kNoMagic;
    if (magic) {
      std::string why;
      for (int i = 0; i < 2; ++i) {
        if (slots[i].kind == SlotKind::kBad) why += (why.empty() ? "" : "; ") + describe_bad(slots[i], i);
      }
      return make_error(TpmErrc::kAuth, name_ + ": authentication failed: the TPM state of " + instance_ +
                                            " does not decrypt under the key given (" + why +
                                            "): a wrong key, another instance's state, or tampering; refusing to "
                                            "open it (a new TPM is never made over an existing state)");
    }
    if (!slots[0].all_zero || !slots[1].all_zero)
      return make_error(TpmErrc::kState, name_ + " is neither empty nor an azote TPM state (no AZTPMST1 slot); "
                                                 "refusing to make a new TPM over it");
    loaded_ = true;
    return out;  // empty: a new TPM
  }
  const int other = 1 - best;
  if (slots[other].kind == SlotKind::kBad) {
    LOG_WARN("%s: %s; ignored as a torn write, the TPM state is generation %llu in slot %d", name_.c_str(),
             describe_bad(slots[other], other).c_str(), static_cast<unsigned long long>(slots[best].generation), best);
    out.ignored_slot = other;
  }
  out.empty = false;
  out.generation = slots[best].generation;
  out.slot = best;
  out.state = std::move(slots[best].state);
  generation_ = out.generation;
  slot_ = best;
  loaded_ = true;
  return out;
}

TpmResult<void> StateFile::store(const StateKey& key, std::span<const uint8_t> state) {
  if (!loaded_) return make_error(TpmErrc::kState, name_ + ": stored before it was loaded");
  if (state.size() > kMaxStateBytes)
    return make_error(TpmErrc::kState, name_ + ": the TPM state is " + std::to_string(state.size()) +
                                           " bytes, more than a slot holds (" + std::to_string(kMaxStateBytes) +
                                           "); not written");
  const uint64_t generation = generation_ + 1;
  const int slot = slot_ == 0 ? 1 : 0;
  auto wrapped = pki::wrap_key(key.bytes(), state, state_context(instance_, generation));
  if (!wrapped) return make_error(TpmErrc::kState, name_ + ": encrypting the TPM state: " + wrapped.error().message());
  std::vector<uint8_t> buf(kSlotHeaderBytes);
  std::memcpy(buf.data(), kSlotMagic, sizeof kSlotMagic);
  put_le(buf.data() + 8, generation, 8);
  put_le(buf.data() + 16, wrapped->size(), 4);
  buf.insert(buf.end(), wrapped->begin(), wrapped->end());
  const std::string what = name_ + ": write slot " + std::to_string(slot);
  // The first write goes in two steps: the slot under a pending magic, on disk, then
  // the magic (one 8-byte write, within a sector). Cut short before the end, it reads
  // as never written (a new TPM) rather than as a state that does not authenticate,
  // which would be refused forever with nothing to fall back to. Later writes fall
  // back to the other slot.
  const bool first = generation_ == 0;
  if (first) std::memcpy(buf.data(), kPendingMagic, sizeof kPendingMagic);
  AZOTE_TRYV(write_all(fd_.get(), buf, slot_offset(slot), what));
  if (::fdatasync(fd_.get()) != 0) return errno_error(TpmErrc::kState, name_ + ": fdatasync");
  if (first) {
    AZOTE_TRYV(write_all(fd_.get(), std::span(reinterpret_cast<const uint8_t*>(kSlotMagic), sizeof kSlotMagic),
                         slot_offset(slot), what));
    if (::fdatasync(fd_.get()) != 0) return errno_error(TpmErrc::kState, name_ + ": fdatasync");
  }
  generation_ = generation;
  slot_ = slot;
  return {};
}

}  // namespace azote::card_tpm

// Internal: an open-addressing hash index (linear probing, load factor <= 1/2,
// backward-shift deletion, no tombstones) from a 64-bit hash to the uint32 id of a
// record the caller stores elsewhere (records never move when the index changes,
// so they can sit on intrusive lists). Each slot keeps 32 bits of the hash, which
// is all a capacity below 2^32 needs to rehash and to reject most non-matching
// slots without touching the record. Allocates only when it grows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace azote::vpc::detail {

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

class HashIndex {
 public:
  static constexpr uint32_t kNone = 0xffffffffu;

  explicit HashIndex(size_t initial_capacity = 16) { reset(initial_capacity); }

  size_t size() const { return size_; }
  size_t capacity() const { return slots_.size(); }

  // The id whose record eq(id) accepts, among those inserted with this hash; kNone.
  template <class Eq>
  uint32_t find(uint64_t hash, Eq&& eq) const {
    const uint32_t h = static_cast<uint32_t>(hash);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id_plus1 == 0) return kNone;
      if (s.hash == h && eq(s.id_plus1 - 1)) return s.id_plus1 - 1;
    }
  }

  // `id` must not be in the index already.
  void insert(uint64_t hash, uint32_t id) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    place(Slot{static_cast<uint32_t>(hash), id + 1});
    ++size_;
  }

  // Removes `id`, inserted with `hash`; false if absent.
  bool erase(uint64_t hash, uint32_t id) {
    const uint32_t h = static_cast<uint32_t>(hash);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].id_plus1 == 0) return false;
      if (slots_[i].id_plus1 == id + 1) {
        shift_back(i);
        --size_;
        return true;
      }
    }
  }

  // Empties the index, keeping its capacity.
  void clear() {
    for (Slot& s : slots_) s = Slot{};
    size_ = 0;
  }

 private:
  struct Slot {
    uint32_t hash = 0;
    uint32_t id_plus1 = 0;  // 0: empty
  };

  void reset(size_t capacity) {
    size_t c = 16;
    while (c < capacity) c *= 2;
    slots_.assign(c, Slot{});
    mask_ = c - 1;
  }

  void place(Slot s) {
    size_t i = s.hash & mask_;
    while (slots_[i].id_plus1 != 0) i = (i + 1) & mask_;
    slots_[i] = s;
  }

  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    reset(old.size() * 2);
    for (const Slot& s : old) {
      if (s.id_plus1 != 0) place(s);
    }
  }

  // Deletion without tombstones: pull later members of the probe run back into the
  // hole when the hole lies between their home slot and where they sit.
  void shift_back(size_t hole) {
    size_t j = hole;
    for (;;) {
      j = (j + 1) & mask_;
      if (slots_[j].id_plus1 == 0) break;
      const size_t home = slots_[j].hash & mask_;
      if (((j - home) & mask_) >= ((j - hole) & mask_)) {
        slots_[hole] = slots_[j];
        hole = j;
      }
    }
    slots_[hole] = Slot{};
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace azote::vpc::detail

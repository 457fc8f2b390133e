// Guest physical memory backed by memfds, so cards can map the same pages later
// (vhost-user SET_MEM_TABLE hands them a memfd and each region's offset): one for
// private RAM and, when the guest supports it, one for the I/O window, which alone is
// handed to cards.
//
// Every access from the VMM goes through read()/write(), which check start, length
// and overflow; no raw pointer into guest RAM leaves this library except the region
// table the KVM layer needs for memslots. Keeping access behind this one interface is
// what lets the mapping policy change in one place later (secret hiding: map pages
// only transiently).
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "base/error.hpp"
#include "base/mapping.hpp"
#include "base/unique_fd.hpp"

namespace azote {

// A guest-physical address. Deliberately not convertible to or from host pointers.
struct GuestAddress {
  uint64_t raw = 0;
  constexpr GuestAddress() = default;
  constexpr explicit GuestAddress(uint64_t v) : raw(v) {}
  constexpr GuestAddress operator+(uint64_t off) const { return GuestAddress(raw + off); }
  constexpr auto operator<=>(const GuestAddress&) const = default;
};

enum class MemoryErrc {
  kCreate = 1,     // memfd/mmap failure
  kBadLayout,      // overlapping, unaligned or empty regions
  kOutOfRange,     // an access outside guest RAM or across a region boundary
};
using MemoryError = Error<MemoryErrc>;

// The one way code that walks guest-shared structures (virtqueues, request headers)
// reaches guest RAM. Implemented by GuestMemory (the VMM's own mapping) and by a
// vhost-user backend's mapping of the frontend's memfds, so the same virtqueue code
// runs in both. Callers copy metadata out once and validate the copy; the returned
// pointer is for bulk data only (zero-copy I/O).
class GuestMemoryView {
 public:
  virtual ~GuestMemoryView() = default;
  // Host pointer to [gpa, gpa+len) when that range lies inside one region (and does
  // not wrap); nullptr otherwise. len 0 is valid at any address inside a region.
  virtual uint8_t* range(GuestAddress gpa, uint64_t len) const = 0;
};

struct RegionSpec {
  GuestAddress start;
  uint64_t size = 0;
  // Part of the I/O window: backed by a memfd of its own, the only one cards are given
  // (what a card behind an IOMMU could reach). Every other region is private to the VMM
  // and KVM.
  bool io = false;
};

struct MemoryRegion {
  GuestAddress start;
  uint64_t size = 0;
  uint64_t file_offset = 0;  // offset of this region inside its memfd
  uint8_t* host = nullptr;   // VMM mapping, for KVM memslots only
  bool io = false;           // in the I/O window's memfd (io_memfd())
  GuestAddress end() const { return start + size; }
};

class GuestMemory final : public GuestMemoryView {
 public:
  // Creates one memfd holding every private region back to back (page-aligned regions,
  // sorted, non-overlapping), and one for the I/O window's regions if any, and maps them
  // shared. `private_fd`, when given, backs the private regions instead of a new memfd:
  // a file of exactly private_bytes(specs) bytes made by the caller (a KVM guest_memfd,
  // which only the VM's own fd can create); it is mapped, never resized or sealed.
  static Result<GuestMemory, MemoryError> create(const std::vector<RegionSpec>& specs, UniqueFd private_fd = {});
  // Bytes of the private regions of `specs` (what `private_fd` must hold).
  static uint64_t private_bytes(const std::vector<RegionSpec>& specs);

  GuestMemory(GuestMemory&&) = default;
  GuestMemory& operator=(GuestMemory&&) = default;
  ~GuestMemory() override = default;

  Result<void, MemoryError> write(GuestAddress gpa, std::span<const uint8_t> bytes);
  Result<void, MemoryError> read(GuestAddress gpa, std::span<uint8_t> out) const;
  Result<void, MemoryError> fill(GuestAddress gpa, uint8_t value, uint64_t len);

  template <class T>
  Result<void, MemoryError> write_obj(GuestAddress gpa, const T& obj) {
    static_assert(std::is_trivially_copyable_v<T>);
    return write(gpa, std::span(reinterpret_cast<const uint8_t*>(&obj), sizeof(T)));  // NOLINT
  }
  template <class T>
  Result<T, MemoryError> read_obj(GuestAddress gpa) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T obj{};
    AZOTE_TRYV(read(gpa, std::span(reinterpret_cast<uint8_t*>(&obj), sizeof(T))));  // NOLINT
    return obj;
  }

  // True if [gpa, gpa+len) lies inside one region (len 0 allowed).
  bool contains(GuestAddress gpa, uint64_t len) const;
  uint8_t* range(GuestAddress gpa, uint64_t len) const override { return translate(gpa, len); }
  const std::vector<MemoryRegion>& regions() const { return regions_; }
  uint64_t total_size() const { return total_; }
  int memfd() const { return fd_.get(); }
  // The I/O window's memfd, or -1 when there is no window (cards then get memfd()).
  int io_memfd() const { return io_fd_.get(); }
  bool has_io_window() const { return io_fd_.valid(); }
  // Private RAM is the caller's file (a guest_memfd), not a memfd made here. It stays
  // mapped here either way: KVM's own accesses to guest memory (kvmclock, instruction
  // emulation, kvm_read_guest) go through this process's mapping.
  bool private_is_external() const { return external_; }

 private:
  GuestMemory() = default;
  // Host pointer for [gpa, gpa+len) or nullptr if it is not inside one region.
  uint8_t* translate(GuestAddress gpa, uint64_t len) const;

  UniqueFd fd_, io_fd_;
  MappedRegion map_, io_map_;
  std::vector<MemoryRegion> regions_;
  uint64_t total_ = 0;
  bool external_ = false;
};

}  // namespace azote

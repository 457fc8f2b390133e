// The backend's view of guest RAM: the frontend's memory regions, each mapped from the
// fd that came with SET_MEM_TABLE / ADD_MEM_REG.
//
// Implements GuestMemoryView (guest-physical address -> host pointer, checked against
// one region) and translates frontend *user* addresses, which is what SET_VRING_ADDR
// carries, into guest-physical addresses. The table is only changed by the session
// while every queue is stopped, so a pointer a running queue holds stays valid.
#pragma once

#include <optional>
#include <vector>

#include "base/mapping.hpp"
#include "base/unique_fd.hpp"
#include "guest_memory/guest_memory.hpp"
#include "vhost_user/message.hpp"

namespace azote::vhost_user {

// Maps [offset, offset+size) of `fd` shared, read-write. The fd must be a regular file
// (memfd, hugetlbfs, tmpfs) sealed against shrinking (F_SEAL_SHRINK), so the frontend
// cannot truncate it under the mapping (SIGBUS in the card), and the range must lie
// inside the file. Returns the mapping and the host pointer of `offset` inside it.
struct FdMapping {
  MappedRegion map;
  uint8_t* host = nullptr;
};
Result<FdMapping, VuError> map_fd_range(int fd, uint64_t offset, uint64_t size, const char* what);

class MemoryTable final : public GuestMemoryView {
 public:
  struct Region {
    MemoryRegionDesc desc;
    MappedRegion map;
    uint8_t* host = nullptr;  // host address of desc.guest_phys_addr
  };

  MemoryTable() = default;
  MemoryTable(MemoryTable&&) = default;
  MemoryTable& operator=(MemoryTable&&) = default;
  ~MemoryTable() override = default;

  // Maps every region (validated by validate_request: sizes, wrap, mutual overlap) from
  // its fd; on success replaces the whole table, on failure leaves it unchanged.
  Result<void, VuError> set(std::span<const MemoryRegionDesc> regions, std::span<const UniqueFd> fds);
  // ADD_MEM_REG: one more region, which must not overlap any existing one.
  Result<void, VuError> add(const MemoryRegionDesc& region, const UniqueFd& fd);
  // REM_MEM_REG: removes the region with this guest address, user address and size.
  Result<void, VuError> remove(const MemoryRegionDesc& region);
  void clear() { regions_.clear(); }

  uint8_t* range(GuestAddress gpa, uint64_t len) const override;
  // Guest-physical address of [uaddr, uaddr+len) if that lies inside one region.
  std::optional<GuestAddress> user_to_guest(uint64_t uaddr, uint64_t len) const;

  bool empty() const { return regions_.empty(); }
  size_t size() const { return regions_.size(); }
  const std::vector<Region>& regions() const { return regions_; }

 private:
  static Result<Region, VuError> map_one(const MemoryRegionDesc& d, const UniqueFd& fd);
  std::vector<Region> regions_;
};

}  // namespace azote::vhost_user

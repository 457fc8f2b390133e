#include "vhost_user/memory_table.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace azote::vhost_user {
namespace {

uint64_t page_size() {
  static const uint64_t p = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return p;
}

// Offset of [addr, addr+len) inside [start, start+size) if it lies entirely inside
// (len 0 is allowed anywhere up to and including the end, as GuestMemory allows).
std::optional<uint64_t> inside(uint64_t start, uint64_t size, uint64_t addr, uint64_t len) {
  if (addr < start) return std::nullopt;
  const uint64_t off = addr - start;
  if (off > size || len > size - off) return std::nullopt;
  return off;
}

}  // namespace

Result<FdMapping, VuError> map_fd_range(int fd, uint64_t offset, uint64_t size, const char* what) {
  const std::string w(what);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno_error(Errc::kBadRegion, w + ": fstat");
  if (!S_ISREG(st.st_mode)) return make_error(Errc::kBadRegion, w + ": fd is not a regular file (memfd)");
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0)
    return make_error(Errc::kBadRegion, w + ": fd is not sealed against shrinking (F_SEAL_SHRINK)");
  const uint64_t fsize = static_cast<uint64_t>(st.st_size);
  if (size == 0 || offset > fsize || size > fsize - offset)
    return make_error(Errc::kBadRegion, w + ": [" + std::to_string(offset) + ", +" + std::to_string(size) +
                                            ") is not inside the " + std::to_string(fsize) + "-byte fd");
  const uint64_t aligned = offset & ~(page_size() - 1);
  const uint64_t delta = offset - aligned;
  const uint64_t len = size + delta;  // cannot wrap: offset + size <= fsize
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, static_cast<off_t>(aligned));
  if (p == MAP_FAILED) return errno_error(Errc::kMap, w + ": mmap of " + std::to_string(len) + " bytes");
  // Guest RAM must not end up in a core dump of the card.
  ::madvise(p, len, MADV_DONTDUMP);
  FdMapping m;
  m.map = MappedRegion(p, len);
  m.host = m.map.data() + delta;
  return m;
}

Result<MemoryTable::Region, VuError> MemoryTable::map_one(const MemoryRegionDesc& d, const UniqueFd& fd) {
  AZOTE_TRYV(validate_region(d));
  AZOTE_TRY(m, map_fd_range(fd.get(), d.mmap_offset, d.memory_size, "memory region"));
  Region r;
  r.desc = d;
  r.map = std::move(m.map);
  r.host = m.host;
  return r;
}

Result<void, VuError> MemoryTable::set(std::span<const MemoryRegionDesc> regions, std::span<const UniqueFd> fds) {
  if (regions.empty() || regions.size() > kMaxMemRegions || regions.size() != fds.size())
    return make_error(Errc::kBadRegion, "memory table has " + std::to_string(regions.size()) + " regions and " +
                                            std::to_string(fds.size()) + " fds");
  std::vector<Region> next;
  next.reserve(regions.size());
  for (size_t i = 0; i < regions.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (regions_overlap(regions[i], regions[j]))
        return make_error(Errc::kBadRegion, "region " + std::to_string(i) + " overlaps region " + std::to_string(j));
    }
    auto r = map_one(regions[i], fds[i]);
    if (!r) return make_error(r.error().code, "region " + std::to_string(i) + ": " + r.error().context, r.error().errnum);
    next.push_back(std::move(r).value());
  }
  regions_ = std::move(next);
  return {};
}

Result<void, VuError> MemoryTable::add(const MemoryRegionDesc& region, const UniqueFd& fd) {
  if (regions_.size() >= kMaxMemRegions)
    return make_error(Errc::kBadRegion, "all " + std::to_string(kMaxMemRegions) + " memory slots are in use");
  for (size_t i = 0; i < regions_.size(); ++i) {
    if (regions_overlap(region, regions_[i].desc))
      return make_error(Errc::kBadRegion, "added region overlaps region " + std::to_string(i));
  }
  AZOTE_TRY(r, map_one(region, fd));
  regions_.push_back(std::move(r));
  return {};
}

Result<void, VuError> MemoryTable::remove(const MemoryRegionDesc& region) {
  for (auto it = regions_.begin(); it != regions_.end(); ++it) {
    const auto& d = it->desc;
    if (d.guest_phys_addr == region.guest_phys_addr && d.userspace_addr == region.userspace_addr &&
        d.memory_size == region.memory_size) {
      regions_.erase(it);
      return {};
    }
  }
  return make_error(Errc::kBadRegion, "no region matches the one to remove");
}

uint8_t* MemoryTable::range(GuestAddress gpa, uint64_t len) const {
  for (const auto& r : regions_) {
    if (auto off = inside(r.desc.guest_phys_addr, r.desc.memory_size, gpa.raw, len)) return r.host + *off;
  }
  return nullptr;
}

std::optional<GuestAddress> MemoryTable::user_to_guest(uint64_t uaddr, uint64_t len) const {
  for (const auto& r : regions_) {
    if (auto off = inside(r.desc.userspace_addr, r.desc.memory_size, uaddr, len))
      return GuestAddress(r.desc.guest_phys_addr + *off);
  }
  return std::nullopt;
}

}  // namespace azote::vhost_user

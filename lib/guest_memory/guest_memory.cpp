#include "guest_memory/guest_memory.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace azote {
namespace {
constexpr uint64_t kPage = 4096;
}

namespace {

struct Backing {
  UniqueFd fd;
  MappedRegion map;
};

Result<Backing, MemoryError> make_backing(const char* name, uint64_t total) {
  Backing b;
  b.fd = UniqueFd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!b.fd) return errno_error(MemoryErrc::kCreate, "memfd_create");
  if (::ftruncate(b.fd.get(), static_cast<off_t>(total)) != 0)
    return errno_error(MemoryErrc::kCreate, std::string("ftruncate ") + name + " to " + std::to_string(total));
  // A peer that maps the memfd (a card) must never see it shrink under it (SIGBUS).
  if (::fcntl(b.fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    return errno_error(MemoryErrc::kCreate, std::string("seal ") + name);
  void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, b.fd.get(), 0);
  if (p == MAP_FAILED) return errno_error(MemoryErrc::kCreate, std::string("mmap ") + name);
  b.map = MappedRegion(p, total);
  // Guest RAM must not end up in a core dump of the VMM.
  ::madvise(p, total, MADV_DONTDUMP);
  return b;
}

Result<Backing, MemoryError> map_external(UniqueFd fd, uint64_t total) {
  Backing b;
  b.fd = std::move(fd);
  void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, b.fd.get(), 0);
  if (p == MAP_FAILED) return errno_error(MemoryErrc::kCreate, "mmap the private memory's file");
  b.map = MappedRegion(p, total);
  ::madvise(p, total, MADV_DONTDUMP);
  return b;
}

}  // namespace

uint64_t GuestMemory::private_bytes(const std::vector<RegionSpec>& specs) {
  uint64_t n = 0;
  for (const auto& s : specs) n += s.io ? 0 : s.size;
  return n;
}

Result<GuestMemory, MemoryError> GuestMemory::create(const std::vector<RegionSpec>& specs, UniqueFd private_fd) {
  if (specs.empty()) return make_error(MemoryErrc::kBadLayout, "no memory regions");
  uint64_t total = 0, io_total = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& s = specs[i];
    if (s.size == 0 || s.size % kPage != 0 || s.start.raw % kPage != 0)
      return make_error(MemoryErrc::kBadLayout, "region " + std::to_string(i) + " is empty or not page aligned");
    if (s.start.raw + s.size < s.start.raw)
      return make_error(MemoryErrc::kBadLayout, "region " + std::to_string(i) + " wraps around");
    if (i > 0 && specs[i - 1].start.raw + specs[i - 1].size > s.start.raw)
      return make_error(MemoryErrc::kBadLayout, "regions overlap or are not sorted");
    (s.io ? io_total : total) += s.size;
  }
  if (total == 0) return make_error(MemoryErrc::kBadLayout, "no private memory region");

  GuestMemory mem;
  mem.external_ = private_fd.valid();
  AZOTE_TRY(main, mem.external_ ? map_external(std::move(private_fd), total) : make_backing("azote-guest-ram", total));
  mem.fd_ = std::move(main.fd);
  mem.map_ = std::move(main.map);
  if (io_total > 0) {
    AZOTE_TRY(io, make_backing("azote-guest-io-window", io_total));
    mem.io_fd_ = std::move(io.fd);
    mem.io_map_ = std::move(io.map);
  }
  uint64_t off = 0, io_off = 0;
  for (const auto& s : specs) {
    if (s.io) {
      mem.regions_.push_back(MemoryRegion{s.start, s.size, io_off, mem.io_map_.data() + io_off, true});
      io_off += s.size;
    } else {
      mem.regions_.push_back(MemoryRegion{s.start, s.size, off, mem.map_.data() + off, false});
      off += s.size;
    }
  }
  mem.total_ = total + io_total;
  return mem;
}

uint8_t* GuestMemory::translate(GuestAddress gpa, uint64_t len) const {
  for (const auto& r : regions_) {
    if (gpa.raw < r.start.raw) continue;
    const uint64_t off = gpa.raw - r.start.raw;
    if (off >= r.size && !(off == r.size && len == 0)) continue;
    if (len > r.size - off) return nullptr;  // crosses the end of this region
    return r.host + off;
  }
  return nullptr;
}

bool GuestMemory::contains(GuestAddress gpa, uint64_t len) const { return translate(gpa, len) != nullptr; }

Result<void, MemoryError> GuestMemory::write(GuestAddress gpa, std::span<const uint8_t> bytes) {
  uint8_t* h = translate(gpa, bytes.size());
  if (h == nullptr)
    return make_error(MemoryErrc::kOutOfRange, "guest write of " + std::to_string(bytes.size()) +
                                                   " bytes at " + std::to_string(gpa.raw) + " is outside RAM");
  std::memcpy(h, bytes.data(), bytes.size());
  return {};
}

Result<void, MemoryError> GuestMemory::read(GuestAddress gpa, std::span<uint8_t> out) const {
  const uint8_t* h = translate(gpa, out.size());
  if (h == nullptr)
    return make_error(MemoryErrc::kOutOfRange, "guest read of " + std::to_string(out.size()) +
                                                   " bytes at " + std::to_string(gpa.raw) + " is outside RAM");
  std::memcpy(out.data(), h, out.size());
  return {};
}

Result<void, MemoryError> GuestMemory::fill(GuestAddress gpa, uint8_t value, uint64_t len) {
  uint8_t* h = translate(gpa, len);
  if (h == nullptr)
    return make_error(MemoryErrc::kOutOfRange, "guest fill at " + std::to_string(gpa.raw) + " is outside RAM");
  std::memset(h, value, len);
  return {};
}

}  // namespace azote

#include "guest_memory/guest_memory.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>

namespace azote {
namespace {

TEST(GuestMemory, TwoRegionsReadWrite) {
  auto m = GuestMemory::create({{GuestAddress(0), 1 << 20}, {GuestAddress(1ull << 32), 2 << 20}});
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->total_size(), 3u << 20);
  std::array<uint8_t, 4> in{1, 2, 3, 4}, out{};
  ASSERT_TRUE(m->write(GuestAddress((1ull << 32) + 10), in).ok());
  ASSERT_TRUE(m->read(GuestAddress((1ull << 32) + 10), out).ok());
  EXPECT_EQ(in, out);
  // The second region sits right after the first in the memfd: a card mapping the
  // fd at region.file_offset sees the same bytes.
  EXPECT_EQ(m->regions()[1].file_offset, 1u << 20);
  void* p = mmap(nullptr, 3 << 20, PROT_READ, MAP_SHARED, m->memfd(), 0);
  ASSERT_NE(p, MAP_FAILED);
  EXPECT_EQ(static_cast<uint8_t*>(p)[(1 << 20) + 10], 1);
  munmap(p, 3 << 20);
}

TEST(GuestMemory, RejectsOutOfRangeAndCrossing) {
  auto m = GuestMemory::create({{GuestAddress(0), 1 << 20}, {GuestAddress(2 << 20), 1 << 20}});
  ASSERT_TRUE(m.ok());
  std::array<uint8_t, 8> buf{};
  EXPECT_FALSE(m->write(GuestAddress((1 << 20) - 4), buf).ok());  // crosses into the hole
  EXPECT_FALSE(m->read(GuestAddress(1 << 20), buf).ok());         // in the hole
  EXPECT_FALSE(m->read(GuestAddress(~0ull - 3), buf).ok());       // wraps
  EXPECT_FALSE(m->read(GuestAddress(3 << 20), buf).ok());         // past the end
  EXPECT_TRUE(m->read(GuestAddress((1 << 20) - 8), buf).ok());
  EXPECT_TRUE(m->contains(GuestAddress(1 << 20), 0));
}

TEST(GuestMemory, RejectsBadLayout) {
  EXPECT_FALSE(GuestMemory::create({}).ok());
  EXPECT_FALSE(GuestMemory::create({{GuestAddress(0), 100}}).ok());
  EXPECT_FALSE(GuestMemory::create({{GuestAddress(0), 2 << 20}, {GuestAddress(1 << 20), 1 << 20}}).ok());
}

TEST(GuestMemory, MemfdIsSealedAgainstShrinking) {
  auto m = GuestMemory::create({{GuestAddress(0), 1 << 20}});
  ASSERT_TRUE(m.ok());
  EXPECT_NE(ftruncate(m->memfd(), 4096), 0);
}

// The hypervisor backs private RAM with a KVM guest_memfd where the host has one. Only
// the VM's fd can make one; a memfd of the right size stands in for it here (GuestMemory
// only maps it, never resizes or seals it).
TEST(GuestMemory, ExternalPrivateMemoryIsMappedWhereTheCallersFileHasIt) {
  const std::vector<RegionSpec> specs = {{GuestAddress(0), 1 << 20}, {GuestAddress(1 << 20), 1 << 20, true},
                                         {GuestAddress(4 << 20), 2 << 20}};
  ASSERT_EQ(GuestMemory::private_bytes(specs), 3u << 20);
  UniqueFd fd(memfd_create("test-private", MFD_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(ftruncate(fd.get(), 3 << 20), 0);
  const int raw = fd.get();
  auto m = GuestMemory::create(specs, std::move(fd));
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_TRUE(m->private_is_external());
  EXPECT_EQ(m->memfd(), raw);
  EXPECT_NE(m->io_memfd(), raw);
  const std::array<uint8_t, 4> marker{0xa5, 0x5a, 0xc3, 0x3c};
  ASSERT_TRUE(m->write(GuestAddress((4 << 20) + 16), marker).ok());
  // Written through the mapping into the caller's file, after the first region's 1 MiB.
  std::array<uint8_t, 4> got{};
  ASSERT_EQ(pread(raw, got.data(), got.size(), (1 << 20) + 16), 4);
  EXPECT_EQ(got, marker);
  // Not sealed: the caller's file keeps its own rules.
  EXPECT_EQ(fcntl(raw, F_GET_SEALS) & (F_SEAL_SHRINK | F_SEAL_GROW), 0);
  EXPECT_EQ(m->regions()[2].file_offset, 1u << 20);
}

}  // namespace
}  // namespace azote

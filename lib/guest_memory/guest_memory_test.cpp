#include "guest_memory/guest_memory.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>

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

}  // namespace
}  // namespace azote

#include "smaps.hpp"

#include <gtest/gtest.h>

namespace azote::bench {
namespace {

// Two mappings as the kernel prints them: azote-hv's guest memfd and a shared library.
constexpr const char* kAzote = R"(7f2514600000-7f251c600000 rw-s 00000000 00:01 2051                       /memfd:azote-guest-ram (deleted)
Size:             131072 kB
Rss:                 168 kB
Pss:                 168 kB
Anonymous:             0 kB
VmFlags: rd wr sh mr mw me ms sd
7f251c800000-7f251c9a0000 r-xp 00028000 fe:01 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               1664 kB
Rss:                 900 kB
Pss:                 100 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  16 kB
Pss:                  16 kB
Anonymous:            16 kB
)";

// QEMU: guest RAM is a large anonymous mapping; a small anonymous heap must not count as guest.
constexpr const char* kQemu = R"(7f9233e00000-7f923be00000 rw-p 00000000 00:00 0 
Size:             131072 kB
Rss:                2048 kB
Pss:                2048 kB
Anonymous:          2048 kB
7f9240000000-7f9240400000 rw-p 00000000 00:00 0 
Size:               4096 kB
Rss:                 300 kB
Pss:                 300 kB
Anonymous:           300 kB
)";

TEST(Smaps, ParsesHeadersAndFields) {
  const auto maps = parse_smaps(kAzote);
  ASSERT_EQ(maps.size(), 3u);
  EXPECT_EQ(maps[0].path, "/memfd:azote-guest-ram (deleted)");
  EXPECT_EQ(maps[0].perms, "rw-s");
  EXPECT_EQ(maps[0].size_kib(), 131072u);
  EXPECT_EQ(maps[0].rss_kib, 168);
  EXPECT_EQ(maps[1].pss_kib, 100);
  EXPECT_EQ(maps[2].path, "[stack]");
  EXPECT_EQ(maps[2].anon_kib, 16);
}

TEST(Smaps, MemfdIsGuestRam) {
  const auto s = split_guest_memory(parse_smaps(kAzote), 128 * 1024);
  EXPECT_EQ(s.guest_rss_kib, 168);
  EXPECT_EQ(s.guest_mappings.size(), 1u);
  EXPECT_EQ(s.other_rss_kib, 916);
  EXPECT_EQ(s.other_pss_kib, 116);
  EXPECT_EQ(s.other_anon_kib, 16);
  EXPECT_EQ(s.other_file_rss_kib, 900);
}

TEST(Smaps, LargeAnonymousIsGuestRamSmallIsNot) {
  const auto s = split_guest_memory(parse_smaps(kQemu), 128 * 1024);
  EXPECT_EQ(s.guest_rss_kib, 2048);
  EXPECT_EQ(s.other_rss_kib, 300);
  EXPECT_EQ(s.other_anon_kib, 300);
  EXPECT_EQ(s.other_file_rss_kib, 0);
}

TEST(Smaps, EmptyInput) {
  EXPECT_TRUE(parse_smaps("").empty());
  const auto s = split_guest_memory({}, 1024);
  EXPECT_TRUE(s.guest_mappings.empty());
  EXPECT_EQ(s.other_rss_kib, 0);
}

}  // namespace
}  // namespace azote::bench

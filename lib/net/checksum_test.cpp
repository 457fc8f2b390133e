#include "net/checksum.hpp"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "net/test_util.hpp"

namespace azote::net {
namespace {

using testing::hex;

// RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement.
TEST(Checksum, Rfc1071Example) {
  const auto b = hex("00 01 f2 03 f4 f5 f6 f7");
  EXPECT_EQ(Checksum().add(b).sum(), 0xddf2);
  EXPECT_EQ(internet_checksum(b), 0x220d);
  auto with = b;
  with.push_back(0x22);
  with.push_back(0x0d);
  EXPECT_TRUE(checksum_ok(with));
}

TEST(Checksum, OddLengthPadsWithZero) {
  EXPECT_EQ(internet_checksum(hex("01")), static_cast<uint16_t>(~0x0100));
  EXPECT_EQ(internet_checksum(hex("00 01 f2 03 f4 f5 f6 f7 01")), internet_checksum(hex("00 01 f2 03 f4 f5 f6 f7 01 00")));
  EXPECT_EQ(internet_checksum({}), 0xffff);
}

// A well-known IPv4 header (192.168.0.1 -> 192.168.0.199, UDP) whose checksum is b861.
TEST(Checksum, Ipv4HeaderVector) {
  auto h = hex("4500 0073 0000 4000 4011 0000 c0a8 0001 c0a8 00c7");
  EXPECT_EQ(internet_checksum(h), 0xb861);
  h[10] = 0xb8;
  h[11] = 0x61;
  EXPECT_TRUE(checksum_ok(h));
}

TEST(Checksum, PiecesAtAnySplitEqualOneShot) {
  std::mt19937 rng(7);
  std::vector<uint8_t> data(301);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  const uint16_t whole = internet_checksum(data);
  for (size_t a = 0; a <= data.size(); ++a) {
    const size_t b = (a * 7919) % (data.size() + 1);
    const size_t lo = std::min(a, b), hi = std::max(a, b);
    Checksum c;
    c.add(std::span(data).subspan(0, lo)).add(std::span(data).subspan(lo, hi - lo)).add(std::span(data).subspan(hi));
    ASSERT_EQ(c.finish(), whole) << lo << " " << hi;
  }
}

// RFC 1624 §4: HC 0xdd2f, a word changes from 0x5555 to 0x3285; eqn. 3 gives 0x0000.
TEST(Checksum, Rfc1624Example) { EXPECT_EQ(checksum_update16(0xdd2f, 0x5555, 0x3285), 0x0000); }

TEST(Checksum, IncrementalUpdateMatchesRecomputation) {
  std::mt19937 rng(1624);
  for (int round = 0; round < 2000; ++round) {
    std::vector<uint8_t> d(2 * (2 + rng() % 40));
    for (auto& b : d) b = static_cast<uint8_t>(rng());
    d[0] |= 1;  // never all zero
    const uint16_t before = internet_checksum(d);
    const size_t w = 2 * (rng() % (d.size() / 2));
    const uint16_t old_word = static_cast<uint16_t>(d[w] << 8 | d[w + 1]);
    const uint16_t new_word = static_cast<uint16_t>(rng());
    d[w] = static_cast<uint8_t>(new_word >> 8);
    d[w + 1] = static_cast<uint8_t>(new_word);
    const uint16_t updated = checksum_update16(before, old_word, new_word);
    const uint16_t full = internet_checksum(d);
    // Equal, or both representations of zero in ones' complement.
    ASSERT_TRUE(updated == full || (updated == 0 && full == 0xffff) || (updated == 0xffff && full == 0))
        << std::hex << updated << " vs " << full;
    // And the stored field verifies.
    std::vector<uint8_t> with = d;
    with.push_back(static_cast<uint8_t>(updated >> 8));
    with.push_back(static_cast<uint8_t>(updated));
    ASSERT_TRUE(checksum_ok(with));
  }
}

TEST(Checksum, Update32ForAddressRewrite) {
  auto h = hex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7");
  const uint16_t c = checksum_update32(0xb861, 0xc0a80001, 0x0a000105);
  h[12] = 10, h[13] = 0, h[14] = 1, h[15] = 5;
  h[10] = static_cast<uint8_t>(c >> 8);
  h[11] = static_cast<uint8_t>(c);
  EXPECT_TRUE(checksum_ok(h));
  h[10] = h[11] = 0;
  EXPECT_EQ(internet_checksum(h), c);
}

TEST(Checksum, PseudoHeader) {
  // UDP 10.0.1.5:68 -> 10.0.0.2:53 with 4 bytes of payload, computed by the RFC 768 recipe.
  const auto dgram = hex("0044 0035 000c 0000 dead beef");
  const uint16_t c = ipv4_pseudo_header(Ipv4Address(10, 0, 1, 5), Ipv4Address(10, 0, 0, 2), 17, 12).add(dgram).finish();
  const auto manual = hex("0a00 0105 0a00 0002 0011 000c  0044 0035 000c 0000 dead beef");
  EXPECT_EQ(c, internet_checksum(manual));
  EXPECT_EQ(udp_checksum_field(0), 0xffff);
}

}  // namespace
}  // namespace azote::net

// The Geneve codec: what it builds parses back, and every malformed header is refused
// with its reason.
#include "fabric/geneve.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace azote::fabric {
namespace {

std::vector<uint8_t> fabric_packet(uint32_t vni, const SecurityOption& o, size_t payload = 20) {
  std::vector<uint8_t> b(kFabricHeaderLen + payload, 0xab);
  auto n = build_fabric_header(b, vni, o);
  EXPECT_TRUE(n);
  EXPECT_EQ(*n, kFabricHeaderLen);
  return b;
}

TEST(Geneve, BuildsAndParsesTheFabricHeader) {
  const SecurityOption o{true, 7, 42, 0x0102030405060708ull};
  auto b = fabric_packet(0x123456, o);
  // The bytes of RFC 8926 §3.4 / §3.5.
  EXPECT_EQ(b[0], 0x05);  // version 0, 5 words of options
  EXPECT_EQ(b[1], 0x40);  // C: a critical option
  EXPECT_EQ(b[2], 0x65);
  EXPECT_EQ(b[3], 0x58);
  EXPECT_EQ(b[4], 0x12);
  EXPECT_EQ(b[5], 0x34);
  EXPECT_EQ(b[6], 0x56);
  EXPECT_EQ(b[7], 0x00);
  EXPECT_EQ(b[8], 0xff);
  EXPECT_EQ(b[9], 0x2a);
  EXPECT_EQ(b[10], 0x81);
  EXPECT_EQ(b[11], 0x04);
  auto v = parse_geneve(b);
  ASSERT_TRUE(v) << v.error().message();
  EXPECT_EQ(v->vni, 0x123456u);
  EXPECT_TRUE(v->critical);
  EXPECT_FALSE(v->oam);
  EXPECT_EQ(v->header.size(), kFabricHeaderLen);
  EXPECT_EQ(v->payload.size(), 20u);
  auto s = find_security_option(*v);
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_TRUE(s->sealed);
  EXPECT_EQ(s->sender, 7u);
  EXPECT_EQ(s->key_id, 42u);
  EXPECT_EQ(s->seq, 0x0102030405060708ull);
  auto p = fabric_packet(1, SecurityOption{false, 1, 2, 3});
  EXPECT_EQ(p[10], 0x82);
  auto pv = parse_geneve(p);
  ASSERT_TRUE(pv);
  EXPECT_FALSE(find_security_option(*pv)->sealed);
}

TEST(Geneve, RefusesMalformedHeaders) {
  auto good = fabric_packet(5, SecurityOption{true, 1, 1, 1}, 0);
  auto code = [](std::vector<uint8_t> b) {
    auto v = parse_geneve(b);
    return v ? FabricErrc{} : v.error().code;
  };
  EXPECT_EQ(code({}), FabricErrc::kTruncated);
  EXPECT_EQ(code(std::vector<uint8_t>(good.begin(), good.begin() + 7)), FabricErrc::kTruncated);
  EXPECT_EQ(code(std::vector<uint8_t>(good.begin(), good.begin() + 20)), FabricErrc::kTruncated);  // options cut
  auto b = good;
  b[0] |= 0x40;  // version 1
  EXPECT_EQ(code(b), FabricErrc::kBadVersion);
  b = good;
  b[3] = 0x00;  // protocol 0x6500
  EXPECT_EQ(code(b), FabricErrc::kBadProtocol);
  b = good;
  b[1] = 0x00;  // C clear with a critical option
  EXPECT_EQ(code(b), FabricErrc::kBadCriticalBit);
  b = good;
  b[11] = 0x05;  // option longer than the area
  EXPECT_EQ(code(b), FabricErrc::kBadLength);
  b = good;
  b[0] = 0x04;  // area of 4 words cuts the option
  EXPECT_EQ(code(b), FabricErrc::kBadLength);
  b = good;
  b[1] |= 0x80;  // OAM parses, the session refuses it
  auto oam = parse_geneve(b);
  ASSERT_TRUE(oam);
  EXPECT_TRUE(oam->oam);
  // Reserved bits are ignored on receipt (RFC 8926 §3.4).
  b = good;
  b[1] |= 0x3f;
  b[7] = 0xff;
  EXPECT_TRUE(parse_geneve(b));
}

TEST(Geneve, OptionsOfOthersAndTheAzoteOption) {
  const uint8_t d4[4] = {1, 2, 3, 4};
  const uint8_t d16[16] = {0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5};
  std::vector<uint8_t> b(64);
  auto opts = [&](std::vector<GeneveOption> os) {
    auto n = build_geneve(b, 77, os);
    EXPECT_TRUE(n);
    auto v = parse_geneve(std::span(b).subspan(0, *n));
    EXPECT_TRUE(v) << v.error().message();
    return find_security_option(*v);
  };
  // A non-critical option of another class before ours is skipped.
  auto s = opts({{0x0102, 0x01, d4}, {kAzoteOptionClass, 0x81, d16}});
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->sender, 9u);
  EXPECT_EQ(s->seq, 5u);
  // An unknown critical option is refused.
  EXPECT_EQ(opts({{0x0102, 0x81, d4}, {kAzoteOptionClass, 0x81, d16}}).error().code, FabricErrc::kCriticalOption);
  // Ours missing, repeated, not critical, of another type or length.
  EXPECT_EQ(opts({{0x0102, 0x01, d4}}).error().code, FabricErrc::kBadOption);
  EXPECT_EQ(opts({}).error().code, FabricErrc::kBadOption);
  EXPECT_EQ(opts({{kAzoteOptionClass, 0x81, d16}, {kAzoteOptionClass, 0x81, d16}}).error().code, FabricErrc::kBadOption);
  EXPECT_EQ(opts({{kAzoteOptionClass, 0x01, d16}}).error().code, FabricErrc::kBadOption);
  EXPECT_EQ(opts({{kAzoteOptionClass, 0x83, d16}}).error().code, FabricErrc::kBadOption);
  EXPECT_EQ(opts({{kAzoteOptionClass, 0x81, d4}}).error().code, FabricErrc::kBadOption);
  // Builder limits.
  const uint8_t odd[3] = {};
  EXPECT_EQ(build_geneve(b, 1, std::vector<GeneveOption>{{1, 1, odd}}).error().code, FabricErrc::kBadLength);
  EXPECT_EQ(build_geneve(b, 0x1000000, {}).error().code, FabricErrc::kBadConfig);
  std::vector<uint8_t> tiny(10);
  EXPECT_EQ(build_geneve(tiny, 1, std::vector<GeneveOption>{{1, 1, d4}}).error().code, FabricErrc::kNoSpace);
  // An empty option area and a payload: parses, no option found.
  auto n = build_geneve(b, 3, {});
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, kGeneveBaseLen);
  auto v = parse_geneve(b);
  ASSERT_TRUE(v);
  EXPECT_FALSE(v->critical);
  EXPECT_EQ(v->payload.size(), b.size() - 8);
}

}  // namespace
}  // namespace azote::fabric

// Syntax validators: sizes, fd counts, flags, region arithmetic.
#include "vhost_user/message.hpp"

#include <gtest/gtest.h>

#include "vhost_user/test_util.hpp"

namespace azote::vhost_user {
namespace {

using testing::mem_table_payload;
using testing::pod_bytes;

Header hdr(Request r, size_t size, uint32_t flags = kVersion) {
  return Header{static_cast<uint32_t>(r), flags, static_cast<uint32_t>(size)};
}

Errc check(Request r, const std::vector<uint8_t>& p, size_t nfds, uint32_t flags = kVersion) {
  auto v = validate_request(hdr(r, p.size(), flags), p, nfds);
  return v ? Errc{} : v.error().code;
}

MemoryRegionDesc region(uint64_t gpa, uint64_t size, uint64_t user, uint64_t off = 0) {
  return MemoryRegionDesc{gpa, size, user, off};
}

TEST(VhostUserMessage, AcceptsWellFormedRequests) {
  EXPECT_EQ(check(Request::kGetFeatures, {}, 0), Errc{});
  EXPECT_EQ(check(Request::kSetFeatures, pod_bytes(uint64_t{1}), 0), Errc{});
  EXPECT_EQ(check(Request::kSetVringNum, pod_bytes(VringState{0, 256}), 0), Errc{});
  EXPECT_EQ(check(Request::kSetVringAddr, pod_bytes(VringAddr{}), 0), Errc{});
  EXPECT_EQ(check(Request::kSetVringKick, pod_bytes(uint64_t{1}), 1), Errc{});
  EXPECT_EQ(check(Request::kSetVringCall, pod_bytes(uint64_t{1 | kVringNoFd}), 0), Errc{});
  EXPECT_EQ(check(Request::kSetMemTable,
                  mem_table_payload({region(0, 4096, 0x10000), region(1 << 20, 4096, 0x20000, 4096)}), 2),
            Errc{});
  EXPECT_EQ(check(Request::kSetInflightFd, pod_bytes(InflightDesc{}), 1), Errc{});
  EXPECT_EQ(check(Request::kRemMemReg, pod_bytes(SingleMemoryRegion{0, region(0, 4096, 0)}), 1), Errc{});
  EXPECT_EQ(check(Request::kRemMemReg, pod_bytes(SingleMemoryRegion{0, region(0, 4096, 0)}), 0), Errc{});
  std::vector<uint8_t> cfg = pod_bytes(ConfigHeader{8, 4, 0});
  cfg.resize(cfg.size() + 4);
  EXPECT_EQ(check(Request::kSetConfig, cfg, 0), Errc{});
  EXPECT_EQ(check(Request::kSetFeatures, pod_bytes(uint64_t{1}), 0, kVersion | kFlagNeedReply), Errc{});
}

TEST(VhostUserMessage, RejectsBadHeaders) {
  EXPECT_EQ(check(Request::kGetFeatures, {}, 0, 0), Errc::kBadHeader);                       // version 0
  EXPECT_EQ(check(Request::kGetFeatures, {}, 0, 2), Errc::kBadHeader);                       // version 2
  EXPECT_EQ(check(Request::kGetFeatures, {}, 0, kVersion | kFlagReply), Errc::kBadHeader);  // a reply
  EXPECT_EQ(check(Request::kGetFeatures, {}, 0, kVersion | 0x100), Errc::kBadHeader);       // unknown flag
  EXPECT_EQ(check(static_cast<Request>(99), {}, 0), Errc::kBadHeader);
  EXPECT_EQ(check(Request::kIotlbMsg, {}, 0), Errc::kBadHeader);
  EXPECT_EQ(check(Request::kNone, {}, 0), Errc::kBadHeader);
}

TEST(VhostUserMessage, RejectsPayloadSizeMismatch) {
  EXPECT_EQ(check(Request::kGetFeatures, {1}, 0), Errc::kBadPayload);
  EXPECT_EQ(check(Request::kSetFeatures, std::vector<uint8_t>(4), 0), Errc::kBadPayload);
  EXPECT_EQ(check(Request::kSetVringAddr, std::vector<uint8_t>(32), 0), Errc::kBadPayload);
  EXPECT_EQ(check(Request::kSetInflightFd, std::vector<uint8_t>(20), 1), Errc::kBadPayload);
  auto mt = mem_table_payload({region(0, 4096, 0)});
  mt.push_back(0);
  EXPECT_EQ(check(Request::kSetMemTable, mt, 1), Errc::kBadPayload);
  // Header size and payload disagree.
  EXPECT_FALSE(validate_request(hdr(Request::kSetFeatures, 16), pod_bytes(uint64_t{1}), 0));
}

TEST(VhostUserMessage, RejectsWrongFdCounts) {
  EXPECT_EQ(check(Request::kGetFeatures, {}, 1), Errc::kBadFds);
  EXPECT_EQ(check(Request::kSetVringNum, pod_bytes(VringState{0, 8}), 1), Errc::kBadFds);
  EXPECT_EQ(check(Request::kSetVringKick, pod_bytes(uint64_t{0}), 0), Errc::kBadFds);           // fd missing
  EXPECT_EQ(check(Request::kSetVringKick, pod_bytes(uint64_t{kVringNoFd}), 1), Errc::kBadFds);  // NOFD + fd
  EXPECT_EQ(check(Request::kSetVringKick, pod_bytes(uint64_t{0x200}), 1), Errc::kBadPayload);   // reserved bit
  EXPECT_EQ(check(Request::kSetMemTable, mem_table_payload({region(0, 4096, 0)}), 0), Errc::kBadFds);
  EXPECT_EQ(check(Request::kSetMemTable, mem_table_payload({region(0, 4096, 0)}), 2), Errc::kBadFds);
  EXPECT_EQ(check(Request::kSetInflightFd, pod_bytes(InflightDesc{}), 0), Errc::kBadFds);
  EXPECT_EQ(check(Request::kAddMemReg, pod_bytes(SingleMemoryRegion{0, region(0, 4096, 0)}), 2), Errc::kBadFds);
}

TEST(VhostUserMessage, RejectsBadRegions) {
  const uint64_t top = ~uint64_t{0};
  auto mt = [](std::vector<MemoryRegionDesc> r) { return check(Request::kSetMemTable, mem_table_payload(r), r.size()); };
  EXPECT_EQ(mt({region(0, 0, 0)}), Errc::kBadRegion);                            // empty
  EXPECT_EQ(mt({region(top - 4095, 8192, 0)}), Errc::kBadRegion);                // gpa wraps
  EXPECT_EQ(mt({region(0, 8192, top - 100)}), Errc::kBadRegion);                 // user address wraps
  EXPECT_EQ(mt({region(0, 8192, 0, top)}), Errc::kBadRegion);                    // offset wraps
  EXPECT_EQ(mt({region(0, 8192, 0), region(4096, 4096, 0x100000)}), Errc::kBadRegion);   // gpa overlap
  EXPECT_EQ(mt({region(0, 4096, 0x1000), region(0x10000, 4096, 0x1800)}), Errc::kBadRegion);  // user overlap
  EXPECT_EQ(mt({region(0, 4096, 0x1000), region(4096, 4096, 0x2000)}), Errc{});  // adjacent is fine
  std::vector<MemoryRegionDesc> nine;
  for (uint64_t i = 0; i < 9; ++i) nine.push_back(region(i << 20, 4096, i << 20));
  EXPECT_EQ(check(Request::kSetMemTable, mem_table_payload(nine), 9), Errc::kBadRegion);  // nregions > 8
  EXPECT_EQ(check(Request::kSetMemTable, mem_table_payload({}, 0), 0), Errc::kBadRegion);  // nregions 0
  // nregions says 8, payload holds 1.
  EXPECT_EQ(check(Request::kSetMemTable, mem_table_payload({region(0, 4096, 0)}, 8), 8), Errc::kBadPayload);
  EXPECT_EQ(check(Request::kAddMemReg, pod_bytes(SingleMemoryRegion{0, region(top, 2, 0)}), 1), Errc::kBadRegion);
}

TEST(VhostUserMessage, RejectsBadConfigWindows) {
  auto cfg = [](uint32_t off, uint32_t size, uint32_t body, uint32_t flags = 0) {
    std::vector<uint8_t> p = pod_bytes(ConfigHeader{off, size, flags});
    p.resize(p.size() + body);
    return check(Request::kSetConfig, p, 0);
  };
  EXPECT_EQ(cfg(0, 256, 256), Errc{});
  EXPECT_EQ(cfg(0, 257, 257), Errc::kBadPayload);
  EXPECT_EQ(cfg(250, 16, 16), Errc::kBadPayload);
  EXPECT_EQ(cfg(0xffffffff, 2, 2), Errc::kBadPayload);  // offset + size wraps 32 bits
  EXPECT_EQ(cfg(0, 8, 4), Errc::kBadPayload);
  EXPECT_EQ(cfg(0, 4, 4, 2), Errc::kBadPayload);
  EXPECT_EQ(check(Request::kGetConfig, std::vector<uint8_t>(4), 0), Errc::kBadPayload);
}

TEST(VhostUserMessage, ValidatesReplies) {
  const Header ok{static_cast<uint32_t>(Request::kGetFeatures), kVersion | kFlagReply, 8};
  const auto u = pod_bytes(uint64_t{5});
  EXPECT_TRUE(validate_reply(Request::kGetFeatures, false, ok, u, 0));
  EXPECT_FALSE(validate_reply(Request::kGetFeatures, false, ok, u, 1));  // stray fd
  Header wrong = ok;
  wrong.request = static_cast<uint32_t>(Request::kGetProtocolFeatures);
  EXPECT_FALSE(validate_reply(Request::kGetFeatures, false, wrong, u, 0));
  Header noreply = ok;
  noreply.flags = kVersion;
  EXPECT_FALSE(validate_reply(Request::kGetFeatures, false, noreply, u, 0));
  Header shortp = ok;
  shortp.size = 4;
  EXPECT_FALSE(validate_reply(Request::kGetFeatures, false, shortp, std::vector<uint8_t>(4), 0));
  // Inflight reply needs exactly one fd.
  const Header inf{static_cast<uint32_t>(Request::kGetInflightFd), kVersion | kFlagReply, 24};
  EXPECT_TRUE(validate_reply(Request::kGetInflightFd, false, inf, pod_bytes(InflightDesc{}), 1));
  EXPECT_FALSE(validate_reply(Request::kGetInflightFd, false, inf, pod_bytes(InflightDesc{}), 0));
  // An ack for a request without its own reply.
  const Header ack{static_cast<uint32_t>(Request::kSetFeatures), kVersion | kFlagReply, 8};
  EXPECT_TRUE(validate_reply(Request::kSetFeatures, true, ack, u, 0));
  EXPECT_FALSE(validate_reply(Request::kSetFeatures, false, ack, u, 0));
  // GET_CONFIG: the exact size asked for, or the empty error reply.
  std::vector<uint8_t> c = pod_bytes(ConfigHeader{0, 4, 0});
  c.resize(16);
  const Header cfg{static_cast<uint32_t>(Request::kGetConfig), kVersion | kFlagReply, 16};
  EXPECT_TRUE(validate_reply(Request::kGetConfig, false, cfg, c, 0, 4));
  EXPECT_FALSE(validate_reply(Request::kGetConfig, false, cfg, c, 0, 8));
  const auto empty = pod_bytes(ConfigHeader{0, 0, 0});
  const Header cfg0{static_cast<uint32_t>(Request::kGetConfig), kVersion | kFlagReply, 12};
  auto e = validate_reply(Request::kGetConfig, false, cfg0, empty, 0, 4);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, Errc::kDevice);
}

TEST(VhostUserMessage, Names) {
  EXPECT_EQ(request_name(Request::kSetMemTable), "SET_MEM_TABLE");
  EXPECT_EQ(request_name(Request::kRemMemReg), "REM_MEM_REG");
  EXPECT_EQ(request_name(1000), "REQUEST_1000");
}

}  // namespace
}  // namespace azote::vhost_user

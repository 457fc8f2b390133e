// virtio-blk request parsing over chains built by the mock driver: every request type,
// headers and segments split across buffers, and malformed or hostile requests, which must
// come back as a status to complete with, never a crash.
#include "virtio/blk.hpp"

#include <gtest/gtest.h>

#include <cstring>

#include "virtio/testing/driver.hpp"

namespace azote::virtio {
namespace {

using testing::MockDriver;
using testing::Seg;

constexpr uint64_t kCapacity = 2048;  // sectors (1 MiB disk)

class BlkTest : public ::testing::Test {
 protected:
  BlkTest()
      : mem_(std::move(GuestMemory::create({{GuestAddress(0), 1 << 20}})).value()),
        drv_(mem_, 16, GuestAddress(0x1000), 0x80000),
        q_(mem_),
        cfg_(BlkConfig(kCapacity).seg_max(8).discard(64, 2, 8).write_zeroes(128, 2, true)) {
    if (!q_.configure(16, drv_.desc_addr(), drv_.avail_addr(), drv_.used_addr(), true).ok()) std::abort();
    negotiated_ = cfg_.features();
  }

  Seg bytes(std::span<const uint8_t> b, bool writable = false) {
    return Seg{drv_.put(b), static_cast<uint32_t>(b.size()), writable};
  }
  template <class T>
  Seg obj(const T& v) {
    return bytes(std::span(reinterpret_cast<const uint8_t*>(&v), sizeof v));
  }
  Seg hdr(uint32_t type, uint64_t sector = 0) { return obj(virtio_blk_req_hdr{type, 0, sector}); }
  Seg data(uint32_t len, bool writable, uint8_t fill = 0xab) {
    const GuestAddress a = drv_.alloc(len);
    (void)mem_.fill(a, fill, len);
    return Seg{a, len, writable};
  }
  Seg status() { return data(1, true, 0xee); }
  uint8_t status_at(const Seg& s) { return *mem_.range(s.gpa + (s.len - 1), 1); }

  Chain pop(const std::vector<Seg>& segs, bool indirect = false) {
    auto head = indirect ? drv_.add_indirect_chain(segs) : drv_.add_chain(segs);
    EXPECT_TRUE(head.has_value());
    drv_.publish();
    auto r = q_.pop();
    if (!r.ok() || !r->has_value()) {
      ADD_FAILURE() << "pop failed";
      return {};
    }
    // Hand the descriptors straight back so tests can build many chains; the Chain is a
    // private copy and the buffers stay where they are.
    EXPECT_TRUE(q_.push_used((*r)->head, 0).ok());
    (void)drv_.take_used();
    return std::move(**r);
  }
  Result<BlkRequest, BlkReject> parse(const std::vector<Seg>& segs, bool indirect = false) {
    return parse_blk(pop(segs, indirect), cfg_, negotiated_);
  }
  // Expects a rejection with `why` and `st`, and that complete() writes it into `st_seg`.
  void expect_reject(const std::vector<Seg>& segs, BlkErrc why, uint8_t st) {
    auto r = parse(segs);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().reason, why) << to_string(r.error().reason);
    EXPECT_EQ(r.error().status, st);
    EXPECT_EQ(r.error().complete(), 1u);
    EXPECT_EQ(status_at(segs.back()), st);
  }

  GuestMemory mem_;
  MockDriver drv_;
  SplitQueue q_;
  BlkConfig cfg_;
  uint64_t negotiated_ = 0;
};

// ---- config ----------------------------------------------------------------------------------

TEST(BlkConfig, BuildsConfigSpaceAndFeatures) {
  const BlkConfig plain(1000);
  EXPECT_EQ(plain.features(), feature_bit(kBlkFSegMax) | feature_bit(kBlkFFlush));
  const virtio_blk_config c0 = plain.config();
  EXPECT_EQ(c0.capacity, 1000u);
  EXPECT_EQ(c0.num_queues, 1);
  EXPECT_EQ(c0.max_discard_seg, 0u);

  const BlkConfig full = BlkConfig(1 << 20).seg_max(5000).num_queues(4).read_only(true).discard(256, 8, 8)
                             .write_zeroes(512, 4, true);
  EXPECT_EQ(full.features(), feature_bit(kBlkFSegMax) | feature_bit(kBlkFFlush) | feature_bit(kBlkFRo) |
                                 feature_bit(kBlkFMq) | feature_bit(kBlkFDiscard) | feature_bit(kBlkFWriteZeroes));
  const virtio_blk_config c = full.config();
  EXPECT_EQ(c.seg_max, kBlkMaxDataSegments);  // clamped to IOV_MAX
  EXPECT_EQ(c.num_queues, 4);
  EXPECT_EQ(c.max_discard_sectors, 256u);
  EXPECT_EQ(c.max_discard_seg, 8u);
  EXPECT_EQ(c.discard_sector_alignment, 8u);
  EXPECT_EQ(c.max_write_zeroes_sectors, 512u);
  EXPECT_EQ(c.max_write_zeroes_seg, 4u);
  EXPECT_EQ(c.write_zeroes_may_unmap, 1);
  EXPECT_EQ(c.unused0, 0);
  // Bytes at the spec offsets (§5.2.4), as a driver reads them.
  uint8_t raw[sizeof c];
  std::memcpy(raw, &c, sizeof c);
  EXPECT_EQ(raw[34], 4);    // num_queues
  EXPECT_EQ(raw[56], 1);    // write_zeroes_may_unmap
  EXPECT_EQ(raw[40], 8);    // max_discard_seg
  EXPECT_FALSE(BlkConfig(1).flush(false).features() & feature_bit(kBlkFFlush));
  EXPECT_EQ(raw[32], 0);    // writeback: only with CONFIG_WCE
  EXPECT_FALSE(full.features() & feature_bit(kBlkFConfigWce));

  // CONFIG_WCE: offered, and the config space reports the default mode, write-back.
  const BlkConfig wce = BlkConfig(8).config_wce(true);
  EXPECT_TRUE(wce.has_config_wce());
  EXPECT_EQ(wce.features(), feature_bit(kBlkFSegMax) | feature_bit(kBlkFFlush) | feature_bit(kBlkFConfigWce));
  const virtio_blk_config cw = wce.config();
  std::memcpy(raw, &cw, sizeof cw);
  EXPECT_EQ(raw[32], 1);
}

// ---- well-formed requests --------------------------------------------------------------------------

TEST_F(BlkTest, Read) {
  const Seg d1 = data(512, true), d2 = data(1024, true), st = status();
  auto r = parse({hdr(kBlkTIn, 7), d1, d2, st});
  ASSERT_TRUE(r.ok()) << to_string(r.error().reason);
  EXPECT_EQ(r->op, BlkOp::kIn);
  EXPECT_EQ(r->sector, 7u);
  EXPECT_EQ(r->data_bytes, 1536u);
  ASSERT_EQ(r->iov.size(), 2u);
  EXPECT_EQ(r->iov[0].iov_base, mem_.range(d1.gpa, 512));
  EXPECT_EQ(r->iov[1].iov_len, 1024u);
  EXPECT_EQ(r->status_ptr, mem_.range(st.gpa, 1));
  EXPECT_EQ(r->complete(kBlkSOk, 1536), 1537u);
  EXPECT_EQ(status_at(st), kBlkSOk);
  EXPECT_EQ(r->complete(kBlkSIoErr, 100000), 1537u);  // clamped to the data length
}

TEST_F(BlkTest, ReadWithStatusInTheLastDataBuffer) {
  const Seg d = data(513, true);
  auto r = parse({hdr(kBlkTIn, 0), d});
  ASSERT_TRUE(r.ok()) << to_string(r.error().reason);
  ASSERT_EQ(r->iov.size(), 1u);
  EXPECT_EQ(r->iov[0].iov_len, 512u);
  EXPECT_EQ(r->status_ptr, mem_.range(d.gpa + 512, 1));
}

TEST_F(BlkTest, WriteWithHeaderAndDataInOneBuffer) {
  std::vector<uint8_t> buf(16 + 1024, 0x5a);
  const virtio_blk_req_hdr h{kBlkTOut, 0, kCapacity - 2};
  std::memcpy(buf.data(), &h, sizeof h);
  const Seg both = bytes(buf);
  auto r = parse({both, status()});
  ASSERT_TRUE(r.ok()) << to_string(r.error().reason);
  EXPECT_EQ(r->op, BlkOp::kOut);
  EXPECT_EQ(r->sector, kCapacity - 2);
  ASSERT_EQ(r->iov.size(), 1u);
  EXPECT_EQ(r->iov[0].iov_base, mem_.range(both.gpa + 16, 1024));
  EXPECT_EQ(r->iov[0].iov_len, 1024u);
  EXPECT_EQ(r->complete(kBlkSOk), 1u);
}

TEST_F(BlkTest, HeaderSplitAcrossThreeBuffers) {
  const virtio_blk_req_hdr h{kBlkTOut, 0xdeadbeef, 42};
  const auto* p = reinterpret_cast<const uint8_t*>(&h);
  const Seg a = bytes(std::span(p, 5)), b = bytes(std::span(p + 5, 7));
  std::vector<uint8_t> tail(4 + 512, 0);
  std::memcpy(tail.data(), p + 12, 4);
  const Seg c = bytes(tail);
  auto r = parse({a, b, c, status()});
  ASSERT_TRUE(r.ok()) << to_string(r.error().reason);
  EXPECT_EQ(r->op, BlkOp::kOut);
  EXPECT_EQ(r->sector, 42u);
  ASSERT_EQ(r->iov.size(), 1u);
  EXPECT_EQ(r->iov[0].iov_base, mem_.range(c.gpa + 4, 512));
}

TEST_F(BlkTest, ReadThroughIndirectTable) {
  auto r = parse({hdr(kBlkTIn, 1), data(4096, true), status()}, /*indirect=*/true);
  ASSERT_TRUE(r.ok()) << to_string(r.error().reason);
  EXPECT_EQ(r->data_bytes, 4096u);
}

TEST_F(BlkTest, Flush) {
  auto r = parse({hdr(kBlkTFlush, 0), status()});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->op, BlkOp::kFlush);
  EXPECT_TRUE(r->iov.empty());
}

TEST_F(BlkTest, GetId) {
  const Seg id = data(20, true, 0xff), st = status();
  auto r = parse({hdr(kBlkTGetId), id, st});
  ASSERT_TRUE(r.ok()) << to_string(r.error().reason);
  EXPECT_EQ(r->op, BlkOp::kGetId);
  EXPECT_EQ(blk_write_id(*r, "vol-0123"), 20u);
  const uint8_t* got = mem_.range(id.gpa, 20);
  EXPECT_EQ(std::memcmp(got, "vol-0123", 8), 0);
  for (int i = 8; i < 20; ++i) EXPECT_EQ(got[i], 0) << i;  // NUL padded
  EXPECT_EQ(r->complete(kBlkSOk, 20), 21u);
}

TEST_F(BlkTest, DiscardAndWriteZeroesSegmentsAreCopied) {
  const virtio_blk_discard_write_zeroes segs[2] = {{10, 8, 0}, {100, 64, 0}};
  const auto* p = reinterpret_cast<const uint8_t*>(segs);
  // The second segment straddles two buffers.
  const Seg a = bytes(std::span(p, 20)), b = bytes(std::span(p + 20, 12));
  auto r = parse({hdr(kBlkTDiscard), a, b, status()});
  ASSERT_TRUE(r.ok()) << to_string(r.error().reason);
  EXPECT_EQ(r->op, BlkOp::kDiscard);
  ASSERT_EQ(r->segments.size(), 2u);
  EXPECT_EQ(r->segments[1].sector, 100u);
  EXPECT_EQ(r->segments[1].num_sectors, 64u);
  (void)mem_.fill(a.gpa, 0xff, 20);  // the guest rewrites the segment afterwards
  EXPECT_EQ(r->segments[0].sector, 10u);

  const virtio_blk_discard_write_zeroes wz{0, 128, kBlkDwzFUnmap};  // unmap is fine here
  auto w = parse({hdr(kBlkTWriteZeroes), obj(wz), status()});
  ASSERT_TRUE(w.ok()) << to_string(w.error().reason);
  EXPECT_EQ(w->op, BlkOp::kWriteZeroes);
  EXPECT_EQ(w->segments[0].flags, kBlkDwzFUnmap);
}

// ---- malformed and hostile requests ------------------------------------------------------------

TEST_F(BlkTest, NoStatusByte) {
  auto r = parse({hdr(kBlkTIn), data(512, false)});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().reason, BlkErrc::kNoStatus);
  EXPECT_EQ(r.error().status_ptr, nullptr);
  EXPECT_EQ(r.error().complete(), 0u);  // complete the chain with 0 bytes
  // Zero-length writable buffers do not count as a status byte either.
  auto z = parse({hdr(kBlkTFlush), Seg{drv_.alloc(1), 0, true}});
  ASSERT_FALSE(z.ok());
  EXPECT_EQ(z.error().reason, BlkErrc::kNoStatus);
}

TEST_F(BlkTest, ShortHeader) {
  const uint8_t eight[8] = {};
  expect_reject({bytes(eight), status()}, BlkErrc::kNoHeader, kBlkSIoErr);
  expect_reject({status()}, BlkErrc::kNoHeader, kBlkSIoErr);
}

TEST_F(BlkTest, SectorOutOfRange) {
  expect_reject({hdr(kBlkTIn, kCapacity - 1), data(1024, true), status()}, BlkErrc::kOutOfRange, kBlkSIoErr);
  expect_reject({hdr(kBlkTIn, kCapacity), data(512, true), status()}, BlkErrc::kOutOfRange, kBlkSIoErr);
  expect_reject({hdr(kBlkTOut, ~uint64_t{0}), data(512, false), status()}, BlkErrc::kOutOfRange, kBlkSIoErr);
  // sector + count wraps past 2^64: must not look small.
  expect_reject({hdr(kBlkTIn, ~uint64_t{0} - 1), data(4096, true), status()}, BlkErrc::kOutOfRange, kBlkSIoErr);
  auto last = parse({hdr(kBlkTIn, kCapacity - 2), data(1024, true), status()});
  EXPECT_TRUE(last.ok());
}

TEST_F(BlkTest, DataLengthRules) {
  expect_reject({hdr(kBlkTIn), data(511, true), status()}, BlkErrc::kBadLength, kBlkSIoErr);
  expect_reject({hdr(kBlkTIn), status()}, BlkErrc::kBadLength, kBlkSIoErr);   // read without data
  expect_reject({hdr(kBlkTOut), status()}, BlkErrc::kBadLength, kBlkSIoErr);  // write without data
  expect_reject({hdr(kBlkTOut), data(100, false), status()}, BlkErrc::kBadLength, kBlkSIoErr);
}

TEST_F(BlkTest, DataInTheWrongDirection) {
  expect_reject({hdr(kBlkTIn), data(512, false), data(512, true), status()}, BlkErrc::kBadLayout, kBlkSIoErr);
  expect_reject({hdr(kBlkTOut), data(512, false), data(512, true), status()}, BlkErrc::kBadLayout, kBlkSIoErr);
  expect_reject({hdr(kBlkTFlush), data(512, false), status()}, BlkErrc::kBadLayout, kBlkSIoErr);
  expect_reject({hdr(kBlkTFlush), data(512, true), status()}, BlkErrc::kBadLayout, kBlkSIoErr);
  expect_reject({hdr(kBlkTGetId), data(16, false), data(20, true), status()}, BlkErrc::kBadLayout, kBlkSIoErr);
}

TEST_F(BlkTest, TooManyDataSegments) {
  std::vector<Seg> segs{hdr(kBlkTIn)};
  for (int i = 0; i < 9; ++i) segs.push_back(data(512, true));  // seg_max is 8
  segs.push_back(status());
  expect_reject(segs, BlkErrc::kTooManySegments, kBlkSIoErr);
}

TEST_F(BlkTest, GetIdNeedsTwentyBytes) {
  expect_reject({hdr(kBlkTGetId), data(19, true), status()}, BlkErrc::kBadLength, kBlkSIoErr);
}

TEST_F(BlkTest, UnknownTypesAreUnsupported) {
  for (uint32_t t : {2u, 3u, 5u, 10u, 14u, 15u, 0x80000000u, 0xffffffffu})
    expect_reject({hdr(t), data(512, true), status()}, BlkErrc::kUnsupported, kBlkSUnsupp);
}

TEST_F(BlkTest, ReadOnlyDeviceRejectsWrites) {
  cfg_.read_only(true);
  expect_reject({hdr(kBlkTOut), data(512, false), status()}, BlkErrc::kReadOnly, kBlkSIoErr);
  const virtio_blk_discard_write_zeroes s{0, 8, 0};
  expect_reject({hdr(kBlkTDiscard), obj(s), status()}, BlkErrc::kReadOnly, kBlkSIoErr);
  expect_reject({hdr(kBlkTWriteZeroes), obj(s), status()}, BlkErrc::kReadOnly, kBlkSIoErr);
  EXPECT_TRUE(parse({hdr(kBlkTIn), data(512, true), status()}).ok());
  EXPECT_TRUE(parse({hdr(kBlkTFlush), status()}).ok());
}

TEST_F(BlkTest, FeaturesNotOfferedOrNegotiated) {
  const virtio_blk_discard_write_zeroes s{0, 8, 0};
  negotiated_ &= ~feature_bit(kBlkFDiscard);
  expect_reject({hdr(kBlkTDiscard), obj(s), status()}, BlkErrc::kUnsupported, kBlkSUnsupp);
  cfg_ = BlkConfig(kCapacity).flush(false);
  negotiated_ = cfg_.features() | feature_bit(kBlkFWriteZeroes);  // driver claims a bit never offered
  expect_reject({hdr(kBlkTFlush), status()}, BlkErrc::kUnsupported, kBlkSUnsupp);
  expect_reject({hdr(kBlkTWriteZeroes), obj(s), status()}, BlkErrc::kUnsupported, kBlkSUnsupp);
}

TEST_F(BlkTest, DiscardSegmentRules) {
  using S = virtio_blk_discard_write_zeroes;
  const S three[3] = {{0, 1, 0}, {8, 1, 0}, {16, 1, 0}};  // max_discard_seg is 2
  expect_reject({hdr(kBlkTDiscard), obj(three), status()}, BlkErrc::kTooManySegments, kBlkSIoErr);
  expect_reject({hdr(kBlkTDiscard), obj(S{0, 8, kBlkDwzFUnmap}), status()}, BlkErrc::kBadFlags, kBlkSUnsupp);
  expect_reject({hdr(kBlkTWriteZeroes), obj(S{0, 8, 2}), status()}, BlkErrc::kBadFlags, kBlkSUnsupp);
  expect_reject({hdr(kBlkTDiscard), obj(S{0, 65, 0}), status()}, BlkErrc::kSegmentTooLarge, kBlkSIoErr);
  expect_reject({hdr(kBlkTDiscard), obj(S{kCapacity - 4, 8, 0}), status()}, BlkErrc::kOutOfRange, kBlkSIoErr);
  expect_reject({hdr(kBlkTWriteZeroes), obj(S{~uint64_t{0} - 2, 8, 0}), status()}, BlkErrc::kOutOfRange,
                kBlkSIoErr);
  const uint8_t twelve[12] = {};
  expect_reject({hdr(kBlkTDiscard), bytes(twelve), status()}, BlkErrc::kBadLength, kBlkSIoErr);
  expect_reject({hdr(kBlkTDiscard), status()}, BlkErrc::kBadLength, kBlkSIoErr);
  expect_reject({hdr(kBlkTDiscard), obj(S{0, 8, 0}), data(4, true), status()}, BlkErrc::kBadLayout, kBlkSIoErr);
}

TEST_F(BlkTest, ParseReusesRequestStorage) {
  BlkRequest req;
  EXPECT_EQ(req.complete(kBlkSOk), 0u);  // never parsed: nothing to write
  const Chain a = pop({hdr(kBlkTIn, 1), data(512, true), data(512, true), status()});
  ASSERT_TRUE(parse_blk(a, cfg_, negotiated_, req).ok());
  EXPECT_EQ(req.iov.size(), 2u);
  const Chain b = pop({hdr(kBlkTFlush), status()});
  ASSERT_TRUE(parse_blk(b, cfg_, negotiated_, req).ok());
  EXPECT_EQ(req.op, BlkOp::kFlush);
  EXPECT_TRUE(req.iov.empty());
  EXPECT_EQ(req.head, b.head);
}

}  // namespace
}  // namespace azote::virtio

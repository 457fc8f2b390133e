#include "cards/tpm/data_server.hpp"

#include <gtest/gtest.h>

namespace azote::card_tpm {
namespace {

std::vector<uint8_t> header(uint32_t size) {
  return {0x80, 0x01, static_cast<uint8_t>(size >> 24), static_cast<uint8_t>(size >> 16), static_cast<uint8_t>(size >> 8),
          static_cast<uint8_t>(size), 0x00, 0x00, 0x01, 0x44};
}

TEST(Frame, PartialHeaderWaits) {
  const auto h = header(12);
  EXPECT_EQ(check_frame({h.data(), 5}, 4096).status, FrameStatus::kNeedMore);
  EXPECT_EQ(check_frame({}, 4096).status, FrameStatus::kNeedMore);
}

TEST(Frame, PartialCommandWaitsThenCompletes) {
  auto c = header(12);
  auto f = check_frame(c, 4096);
  EXPECT_EQ(f.status, FrameStatus::kNeedMore);
  EXPECT_EQ(f.size, 12u);
  c.push_back(0x00);
  c.push_back(0x00);
  f = check_frame(c, 4096);
  EXPECT_EQ(f.status, FrameStatus::kComplete);
  EXPECT_EQ(f.size, 12u);
  c.push_back(0x80);  // the next command's first byte: still one complete command of 12
  EXPECT_EQ(check_frame(c, 4096).size, 12u);
}

TEST(Frame, SizesOutOfRangeAreBad) {
  EXPECT_EQ(check_frame(header(9), 4096).status, FrameStatus::kBad);
  EXPECT_EQ(check_frame(header(0), 4096).status, FrameStatus::kBad);
  EXPECT_EQ(check_frame(header(4097), 4096).status, FrameStatus::kBad);
  EXPECT_EQ(check_frame(header(0xffffffff), 4096).status, FrameStatus::kBad);
  EXPECT_EQ(check_frame(header(10), 4096).status, FrameStatus::kComplete);
  EXPECT_EQ(check_frame(header(4096), 4096).status, FrameStatus::kNeedMore);
}

}  // namespace
}  // namespace azote::card_tpm

#include "fabric/replay.hpp"

namespace azote::fabric {

FabricErrc ReplayWindow::check(uint64_t seq) const {
  if (seq == 0) return FabricErrc::kTooOld;
  if (seq > top_) return FabricErrc{};
  if (top_ - seq >= kWindow) return FabricErrc::kTooOld;
  const uint64_t block = (seq >> 6) & (kBlocks - 1);
  if ((bits_[block] >> (seq & 63)) & 1) return FabricErrc::kReplay;
  return FabricErrc{};
}

void ReplayWindow::update(uint64_t seq) {
  if (seq > top_) {
    const uint64_t cur = top_ >> 6, next = seq >> 6;
    // Blocks between the old top's and the new one's are cleared (all of them past a
    // whole ring's distance, or on the very first packet).
    uint64_t diff = next - cur;
    if (diff > kBlocks || top_ == 0) diff = kBlocks;
    for (uint64_t i = 1; i <= diff; ++i) bits_[(cur + i) & (kBlocks - 1)] = 0;
    if (top_ == 0) bits_[next & (kBlocks - 1)] = 0;
    top_ = seq;
  }
  bits_[(seq >> 6) & (kBlocks - 1)] |= uint64_t{1} << (seq & 63);
}

}  // namespace azote::fabric
